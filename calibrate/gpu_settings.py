"""DVFS and power capping per configuration (as in Maliakel et al., arXiv 2501.08219).

`GpuSettingsController.applied(settings)` locks the SM clock and sets the power limit on every GPU in
use, and restores the previous state on every exit path: normal end, exception, Ctrl-C and (inside
`signals.sigterm_raises`) SIGTERM. `check` probes privilege and limits before any measurement.
NVML has no getter for locked clocks: restoring them means resetting them to the driver default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

from calibrate.grid import GpuSettings
from calibrate.nvml import NvmlError, NvmlSession, call


class GpuSettingsError(NvmlError):
    """A requested setting outside the GPU's limits."""


class GpuSettingsController:
    """Sets and restores locked clocks and power limits through an NVML session."""

    def __init__(self, session: NvmlSession) -> None:
        self.session = session

    @property
    def _gpus(self) -> list[tuple[int, object]]:
        return list(zip(self.session.indices, self.session.handles, strict=True))

    def check(self, wanted: Iterable[GpuSettings]) -> None:
        """Fail before measuring if a wanted setting needs privilege we lack or exceeds a limit.

        Probes with no-op writes: the current power limit written back, locked clocks reset.
        """
        wanted = [s for s in wanted if not s.is_default]
        nvml = self.session.nvml
        for i, h in self._gpus:
            if any(s.power_limit_w is not None for s in wanted):
                self._check_power_limits(i, h, [s.power_limit_w for s in wanted])
                current = call(f"reading GPU {i}'s power limit", nvml.nvmlDeviceGetPowerManagementLimit, h)
                call(f"setting GPU {i}'s power limit", nvml.nvmlDeviceSetPowerManagementLimit, h, current)
            if any(s.clock_mhz is not None for s in wanted):
                call(f"resetting GPU {i}'s locked clocks", nvml.nvmlDeviceResetGpuLockedClocks, h)

    def _check_power_limits(self, i: int, h: object, limits_w: list[float | None]) -> None:
        nvml = self.session.nvml
        lo_mw, hi_mw = call(
            f"reading GPU {i}'s power limit range", nvml.nvmlDeviceGetPowerManagementLimitConstraints, h
        )
        bad = [w for w in limits_w if w is not None and not lo_mw <= w * 1000 <= hi_mw]
        if bad:
            raise GpuSettingsError(f"power_limits_w {bad} outside GPU {i}'s range {lo_mw / 1000:g}-{hi_mw / 1000:g} W")

    @contextmanager
    def applied(self, settings: GpuSettings) -> Iterator[None]:
        """Apply `settings` on all GPUs for the block; restore the previous state on any exit."""
        with ExitStack() as stack:
            for i, h in self._gpus:
                if settings.power_limit_w is not None:
                    stack.enter_context(self._power_limit(i, h, settings.power_limit_w))
                if settings.clock_mhz is not None:
                    stack.enter_context(self._locked_clock(i, h, settings.clock_mhz))
            yield

    @contextmanager
    def _power_limit(self, i: int, h: object, limit_w: float) -> Iterator[None]:
        nvml = self.session.nvml
        previous_mw = call(f"reading GPU {i}'s power limit", nvml.nvmlDeviceGetPowerManagementLimit, h)
        call(
            f"setting GPU {i}'s power limit to {limit_w:g} W",
            nvml.nvmlDeviceSetPowerManagementLimit,
            h,
            int(round(limit_w * 1000)),
        )
        try:
            yield
        finally:
            call(
                f"restoring GPU {i}'s power limit to {previous_mw / 1000:g} W",
                nvml.nvmlDeviceSetPowerManagementLimit,
                h,
                previous_mw,
            )

    @contextmanager
    def _locked_clock(self, i: int, h: object, clock_mhz: int) -> Iterator[None]:
        nvml = self.session.nvml
        call(
            f"locking GPU {i}'s SM clock at {clock_mhz} MHz", nvml.nvmlDeviceSetGpuLockedClocks, h, clock_mhz, clock_mhz
        )
        try:
            yield
        finally:
            call(f"resetting GPU {i}'s locked clocks", nvml.nvmlDeviceResetGpuLockedClocks, h)

"""A fake NVML that behaves like the real one where calibration depends on it.

- The total-energy counter is in mJ and only moves at ~100 ms ticks of a controllable clock.
- Failures are the real `pynvml.NVMLError` subclasses (LibraryNotFound, NotSupported, NoPermission,
  InvalidArgument), raised where the real library raises them.
- Locked clocks and power limits are remembered, so tests can check they are restored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pynvml


class FakeClock:
    """Monotonic seconds that move only when told to (also usable as `sleep`)."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt

    sleep = advance


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    power_w: list[tuple[float, float]] = field(default_factory=lambda: [(0.0, 100.0)])  # (since_s, W)
    power_limit_mw: int = 700_000
    limit_range_mw: tuple[int, int] = (200_000, 700_000)
    locked_clocks: tuple[int, int] | None = None
    sm_clock_mhz: int = 1980
    temperature_c: int = 40
    energy_supported: bool = True

    def energy_j(self, t: float) -> float:
        """Exact integral of power from 0 to t."""
        total = 0.0
        for (t0, p), nxt in zip(self.power_w, [*self.power_w[1:], (math.inf, 0.0)], strict=True):
            total += p * max(0.0, min(t, nxt[0]) - t0)
        return total


class FakeNvml:
    """Module-like stand-in for `pynvml` over `FakeGpu`s driven by a `FakeClock`."""

    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU

    def __init__(
        self, clock: FakeClock, gpus: int = 1, root: bool = True, library: bool = True, update_period_s: float = 0.1
    ) -> None:
        self.clock, self.root, self.library = clock, root, library
        self.update_period_s = update_period_s
        self.gpus = [FakeGpu() for _ in range(gpus)]
        self.calls: list[tuple] = []
        self.initialised = False

    def set_power(self, watts: float, gpu: int = 0) -> None:
        """From now on, GPU `gpu` draws `watts`."""
        self.gpus[gpu].power_w.append((self.clock(), watts))

    # --- lifecycle -------------------------------------------------------
    def nvmlInit(self) -> None:
        if not self.library:
            raise pynvml.NVMLError_LibraryNotFound()
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        if not 0 <= i < len(self.gpus):
            raise pynvml.NVMLError_InvalidArgument()
        return self.gpus[i]

    # --- readings --------------------------------------------------------
    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        if not h.energy_supported:
            raise pynvml.NVMLError_NotSupported()
        tick = math.floor(self.clock() / self.update_period_s) * self.update_period_s
        return int(h.energy_j(tick) * 1000)

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return h.name

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, kind: int) -> int:
        if kind == self.NVML_CLOCK_SM:
            return h.locked_clocks[0] if h.locked_clocks else h.sm_clock_mhz
        return 2619

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        return h.temperature_c

    def nvmlDeviceGetPowerManagementLimit(self, h: FakeGpu) -> int:
        return h.power_limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, h: FakeGpu) -> tuple[int, int]:
        return h.limit_range_mw

    # --- settings (need root) -------------------------------------------
    def _privileged(self, *call: object) -> None:
        self.calls.append(call)
        if not self.root:
            raise pynvml.NVMLError_NoPermission()

    def nvmlDeviceSetPowerManagementLimit(self, h: FakeGpu, limit_mw: int) -> None:
        self._privileged("set_power_limit", self.gpus.index(h), limit_mw)
        lo, hi = h.limit_range_mw
        if not lo <= limit_mw <= hi:
            raise pynvml.NVMLError_InvalidArgument()
        h.power_limit_mw = limit_mw

    def nvmlDeviceSetGpuLockedClocks(self, h: FakeGpu, lo: int, hi: int) -> None:
        self._privileged("lock_clocks", self.gpus.index(h), lo, hi)
        h.locked_clocks = (lo, hi)

    def nvmlDeviceResetGpuLockedClocks(self, h: FakeGpu) -> None:
        self._privileged("reset_clocks", self.gpus.index(h))
        h.locked_clocks = None

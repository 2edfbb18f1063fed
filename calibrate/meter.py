"""Energy meters in the Zeus style: `begin_window` / `end_window` over cumulative counters.

`NvmlMeter` differences NVML's total-energy counter (mJ, converted to J here) summed over the GPUs in
use. The counter updates about every 100 ms, so a window shorter than `min_window_s` is flagged
`short`; the sweep lengthens short windows by repeating the run. `NullMeter` (meter=none) times
only: energy is None.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pynvml

from calibrate.nvml import NvmlSession, call

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(frozen=True)
class Measurement:
    """One window: GPU energy in J (None when not metered), wall time in s, and whether it was short."""

    energy_j: float | None
    duration_s: float
    short: bool = False


@dataclass(frozen=True)
class DeviceInfo:
    """What the table records about the GPUs (None where not known or not supported)."""

    gpu_name: str
    gpu_count: int = 0
    driver: str | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    temperature_c: int | None = None
    power_limit_w: float | None = None


class EnergyMeter(Protocol):
    min_window_s: float
    measures_energy: bool

    def begin_window(self, name: str) -> None: ...

    def end_window(self, name: str) -> Measurement: ...

    def idle_power_w(self) -> float | None: ...

    def device_info(self) -> DeviceInfo | None: ...


class WindowError(KeyError):
    """`end_window` for a window that was never begun."""


class NullMeter:
    """Timing only (meter=none): energy is None, no GPU needed."""

    min_window_s = 0.0
    measures_energy = False

    def __init__(self, clock: Clock = time.perf_counter) -> None:
        self._clock = clock
        self._starts: dict[str, float] = {}

    def begin_window(self, name: str) -> None:
        self._starts[name] = self._clock()

    def end_window(self, name: str) -> Measurement:
        return Measurement(energy_j=None, duration_s=self._clock() - _pop(self._starts, name))

    def idle_power_w(self) -> float | None:
        return None

    def device_info(self) -> DeviceInfo | None:
        return None


class NvmlMeter:
    """GPU energy from NVML's total-energy counter, summed over the session's GPUs.

    Idle power is measured over `idle_window_s` after sleeping `idle_settle_s`.
    """

    def __init__(
        self,
        session: NvmlSession,
        min_window_s: float = 1.0,
        idle_settle_s: float = 5.0,
        idle_window_s: float = 2.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.session = session
        self.min_window_s = min_window_s
        self.measures_energy = True
        self.idle_settle_s = idle_settle_s
        self.idle_window_s = idle_window_s
        self._clock, self._sleep = clock, sleep
        self._starts: dict[str, tuple[float, float]] = {}
        self._energy_mj()  # fail now (NotSupported on pre-Volta GPUs) rather than mid-sweep

    def _energy_mj(self) -> float:
        nvml = self.session.nvml
        return float(
            sum(
                call(f"reading the energy counter of GPU {i}", nvml.nvmlDeviceGetTotalEnergyConsumption, h)
                for i, h in zip(self.session.indices, self.session.handles, strict=True)
            )
        )

    def begin_window(self, name: str) -> None:
        self._starts[name] = (self._clock(), self._energy_mj())

    def end_window(self, name: str) -> Measurement:
        end_mj, end_s = self._energy_mj(), self._clock()
        start_s, start_mj = _pop(self._starts, name)
        duration_s = end_s - start_s
        energy_j = (end_mj - start_mj) / 1000.0
        return Measurement(energy_j, duration_s, short=duration_s < self.min_window_s)

    def idle_power_w(self) -> float | None:
        """Mean power (W) of the idle GPUs over a window, after a settle."""
        self._sleep(self.idle_settle_s)
        self.begin_window("__idle__")
        self._sleep(self.idle_window_s)
        m = self.end_window("__idle__")
        return m.energy_j / m.duration_s if m.duration_s > 0 and m.energy_j is not None else None

    def device_info(self) -> DeviceInfo:
        """Name and driver, first GPU's clocks, hottest temperature, summed power limit."""
        nvml, h0 = self.session.nvml, self.session.handles[0]
        temps = [_optional(nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU) for h in self.session.handles]
        limits = [_optional(nvml.nvmlDeviceGetPowerManagementLimit, h) for h in self.session.handles]
        return DeviceInfo(
            gpu_name=_text(call("reading the GPU name", nvml.nvmlDeviceGetName, h0)) or "unknown GPU",
            gpu_count=len(self.session.handles),
            driver=_text(_optional(nvml.nvmlSystemGetDriverVersion)),
            sm_clock_mhz=_optional(nvml.nvmlDeviceGetClockInfo, h0, nvml.NVML_CLOCK_SM),
            mem_clock_mhz=_optional(nvml.nvmlDeviceGetClockInfo, h0, nvml.NVML_CLOCK_MEM),
            temperature_c=max((t for t in temps if t is not None), default=None),
            power_limit_w=None if None in limits else sum(limits) / 1000.0,
        )


def _pop(starts: dict, name: str):
    try:
        return starts.pop(name)
    except KeyError:
        raise WindowError(f"end_window({name!r}) without begin_window({name!r})") from None


def _optional(fn, *args):
    """An NVML reading that some GPUs or drivers lack: None instead of an error."""
    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


def _text(value: str | bytes | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value

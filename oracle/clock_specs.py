"""Clock parameters of a GPU (`ClockSpec`) and the defaults of the GPUs in `oracle/data/gpus/`, each
figure with its source or marked ASSUMED. An oracle fitted on measurements at several clocks carries its
own (`Oracle.clock`, fitted by `calibrate.clock_fit`), which take the place of these defaults.

Sources read for this table (2025):
- [H100-SMI] `nvidia-smi -q` of 8× "NVIDIA H100 80GB HBM3" (SXM, 700 W), driver 565.57.01, repository
  thamada/nvidia-smi, nvsim/H100SXMx8_smi.py @03fbe6e6: Max Clocks Graphics/SM 1980 MHz, idle SM clock
  345 MHz, Voltage Graphics 685.000 mV at 345 MHz, memory 2619 MHz.
- [H200-SMI] a public `nvidia-smi -q` snapshot of one "NVIDIA H200" (700 W), driver 550.90.12: Max Clocks
  Graphics/SM 1980 MHz, idle SM clock 345 MHz, Voltage Graphics 685.000 mV, memory 3201 MHz.
- [A100-SMI] public `nvidia-smi -q` snapshots of A100 SXM4 80GB boards: Max Clocks Graphics/SM 1410 MHz,
  Max Customer Boost 1410 MHz, memory 1593 MHz (TechPowerUp's A100 SXM4 page: boost 1410 MHz).
Not read here, hence marked ASSUMED where used: the full SUPPORTED_CLOCKS lists (the lowest entry and the
15 MHz step are the figures commonly reported for A100/H100 lists; the lowest entry is taken as the idle
clock where a snapshot shows one), any B200 figure, the voltage at the maximum clock (no snapshot under
load was found; about 1 V is typical of these 4-5 nm parts), the clock below which the voltage stops
falling, the share of power that scales with f·V², and the clock-switch latency (Velička et al., arXiv
2502.20075, measure it on A100 and GH200; their figures were not read here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ClockError(ValueError):
    """A clock the GPU does not support, or a GPU without clock parameters; the message says which."""


@dataclass(frozen=True)
class ClockSpec:
    """Clock parameters of one GPU (MHz, s, fractions); sources in `oracle.clock_specs`.

    min_mhz, max_mhz, step_mhz: the supported SM clocks are max_mhz, max_mhz − step_mhz, … min_mhz.
    voltage_floor_mhz: below it the core voltage stays at `floor_voltage_ratio` × its value at max_mhz.
    dynamic_fraction: the share of above-idle power that scales with f · V(f)².
    switch_latency_s: time to change the clock (for controllers that switch it at run time).
    """

    gpu: str
    min_mhz: int
    max_mhz: int
    step_mhz: int
    voltage_floor_mhz: float
    floor_voltage_ratio: float
    dynamic_fraction: float
    switch_latency_s: float

    def __post_init__(self) -> None:
        problems = []
        if not 0 < self.min_mhz <= self.max_mhz:
            problems.append(f"needs 0 < min_mhz ≤ max_mhz, got {self.min_mhz}, {self.max_mhz}")
        if self.step_mhz <= 0 or (self.max_mhz - self.min_mhz) % self.step_mhz:
            problems.append(f"step_mhz {self.step_mhz} must be positive and divide max_mhz − min_mhz")
        if not self.min_mhz <= self.voltage_floor_mhz <= self.max_mhz:
            problems.append(f"voltage_floor_mhz {self.voltage_floor_mhz} lies outside [min_mhz, max_mhz]")
        if not 0 < self.floor_voltage_ratio <= 1:
            problems.append(f"floor_voltage_ratio must be in (0, 1], got {self.floor_voltage_ratio}")
        if not 0 <= self.dynamic_fraction <= 1:
            problems.append(f"dynamic_fraction must be in [0, 1], got {self.dynamic_fraction}")
        if not self.switch_latency_s >= 0:
            problems.append(f"switch_latency_s must be ≥ 0, got {self.switch_latency_s}")
        if problems:
            raise ValueError(f"clock parameters of {self.gpu!r}: {'; '.join(problems)}")

    @property
    def supported_mhz(self) -> np.ndarray:
        """Every supported SM clock (MHz), ascending."""
        return np.arange(self.min_mhz, self.max_mhz + 1, self.step_mhz)

    def describe(self) -> str:
        """'345-1980 MHz in steps of 15 MHz'."""
        return f"{self.min_mhz}-{self.max_mhz} MHz in steps of {self.step_mhz} MHz"

    def check(self, clock_mhz: float | np.ndarray) -> None:
        """Raise ClockError unless every clock in `clock_mhz` is one of the supported clocks."""
        for f in np.asarray(clock_mhz, dtype=float).ravel():
            if not (self.min_mhz <= f <= self.max_mhz and float(self.max_mhz - f) % self.step_mhz == 0):
                raise ClockError(f"{f:g} MHz is not a supported SM clock of {self.gpu} ({self.describe()})")

    def voltage_ratio(self, clock_mhz: float | np.ndarray) -> np.ndarray:
        """V(f) / V(f_max): flat below the voltage floor, linear from there up to the maximum clock
        (elementwise over an array of clocks)."""
        f = np.asarray(clock_mhz, dtype=float)
        if self.voltage_floor_mhz == self.max_mhz:
            return np.full_like(f, self.floor_voltage_ratio)
        rise = (f - self.voltage_floor_mhz) / (self.max_mhz - self.voltage_floor_mhz)
        return np.where(
            f <= self.voltage_floor_mhz,
            self.floor_voltage_ratio,
            self.floor_voltage_ratio + (1.0 - self.floor_voltage_ratio) * rise,
        )


CLOCK_SPECS: dict[str, ClockSpec] = {
    "h100": ClockSpec(
        gpu="h100",
        min_mhz=345,  # [H100-SMI] idle SM clock, taken as the lowest supported one (ASSUMED to be the list's end)
        max_mhz=1980,  # [H100-SMI] Max Clocks SM
        step_mhz=15,  # ASSUMED: the step reported for A100/H100 SUPPORTED_CLOCKS lists
        voltage_floor_mhz=990,  # ASSUMED: half the maximum clock; no published H100 V-f curve found
        floor_voltage_ratio=0.685,  # [H100-SMI] 685 mV at the floor over an ASSUMED 1.0 V at 1980 MHz
        dynamic_fraction=0.7,  # ASSUMED: SM share of the above-idle power (HBM and I/O take the rest)
        switch_latency_s=0.02,  # ASSUMED order of magnitude (Velička et al., arXiv 2502.20075, not read)
    ),
    "h200": ClockSpec(
        gpu="h200",
        min_mhz=345,  # [H200-SMI] idle SM clock (ASSUMED the list's end)
        max_mhz=1980,  # [H200-SMI] Max Clocks SM
        step_mhz=15,  # ASSUMED: same Hopper die as H100
        voltage_floor_mhz=990,  # ASSUMED: as H100 (same die)
        floor_voltage_ratio=0.685,  # [H200-SMI] 685 mV at the floor over an ASSUMED 1.0 V at the maximum
        dynamic_fraction=0.7,  # ASSUMED: as H100
        switch_latency_s=0.02,  # ASSUMED: as H100
    ),
    "a100": ClockSpec(
        gpu="a100",
        min_mhz=210,  # ASSUMED: the lowest entry commonly reported for A100 SUPPORTED_CLOCKS
        max_mhz=1410,  # [A100-SMI] Max Clocks SM
        step_mhz=15,  # ASSUMED: the step commonly reported for A100 SUPPORTED_CLOCKS
        voltage_floor_mhz=705,  # ASSUMED: half the maximum clock
        floor_voltage_ratio=0.7,  # ASSUMED: no A100 voltage reading found
        dynamic_fraction=0.7,  # ASSUMED: as H100
        switch_latency_s=0.02,  # ASSUMED (Velička et al. measure A100; figures not read)
    ),
    "b200": ClockSpec(
        gpu="b200",
        min_mhz=345,  # ASSUMED: as Hopper; no B200 nvidia-smi snapshot found
        max_mhz=1965,  # ASSUMED: the boost clock given by spec aggregators, not checked against NVIDIA
        step_mhz=15,  # ASSUMED: as Hopper
        voltage_floor_mhz=990,  # ASSUMED: about half the maximum clock, on the 15 MHz grid
        floor_voltage_ratio=0.685,  # ASSUMED: as Hopper
        dynamic_fraction=0.7,  # ASSUMED: as H100
        switch_latency_s=0.02,  # ASSUMED: as H100
    ),
}
"""Clock parameters by the short GPU name of `oracle.arch` ('h100', 'h200', 'a100', 'b200')."""

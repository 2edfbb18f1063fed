"""A locked SM clock as a transform of an oracle's step coefficients (pure; the simulator is untouched).

Step time and energy are linear in the step features (`oracle.features`), so a clock f (MHz) below the
maximum f_max changes each feature's coefficient on its own. Modelling choices:

- Time. Feature i's time coefficient t_i becomes t_i · ((1 − κ_i) + κ_i · f_max / f), κ_i its
  compute-bound share (`COMPUTE_SHARE`): prefill tokens and prefill attention are compute-bound (κ = 1);
  the per-step constant (weights read once a step) and the decode context (KV reads) are memory-bound
  (κ = 0); the per-sequence terms (decode linear layers at small batch, sampling, launch) are half
  and half (κ = 0.5); a mixture of experts' routed-expert reads (`Oracle.experts`) are memory-bound
  (κ = 0); of the prefill overlap (`Oracle.overlap`) the weights' read is memory-bound (κ = 0) and
  a prompt token's compute compute-bound (κ = 1), so at a lower clock a prefill hides all of its
  weights' read from fewer tokens on. The memory clock is not changed.
- Power. Static power is the oracle's idle power P_idle, the same at every clock (leakage's fall with
  voltage is neglected). The rest of a coefficient's energy, D_i = e_i − P_idle · t_i, is split with
  the GPU's `dynamic_fraction` φ: (1 − φ)·D_i is data movement (HBM, I/O), a fixed energy per unit of
  work; φ·D_i is SM switching, whose power scales as f · V(f)². So at clock f
      e_i(f) = P_idle · t_i(f) + (1 − φ) · D_i + φ · D_i · (f / f_max) · v(f)² · t_i(f) / t_i
  (per cycle of compute-bound work, the last term is V²; memory-bound work runs the same time at lower
  switching power). A coefficient whose implied power is below idle keeps all its energy as static.
  Then step power is P_idle plus a non-negative part that grows with f over a time that shrinks with
  f: it never falls as the clock rises. (A coefficient below idle power breaks the P_idle term's
  constancy: a mixed step's power can then rise slightly as the clock falls.)
- Voltage. v(f) = V(f) / V(f_max) is flat at `floor_voltage_ratio` up to `voltage_floor_mhz`, then
  rises linearly to 1 at f_max.
At f_max the oracle's coefficients are returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from oracle.arch import find_gpu
from oracle.model import Oracle, Overlap, with_reads

COMPUTE_SHARE: Final = np.array([0.0, 0.5, 0.0, 0.5, 1.0, 1.0])
"""κ_i: the share of each feature's time that scales with f_max / f (order of `features.FEATURES`)."""
OVERLAP_TOKEN: Final = 8
"""The column of `with_reads`' layout holding the prefill overlap's prompt-token compute."""


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
    voltage_floor_mhz: int
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

    def check(self, clock_mhz: float) -> None:
        """Raise ClockError unless `clock_mhz` is one of the supported clocks."""
        ok = self.min_mhz <= clock_mhz <= self.max_mhz and float(self.max_mhz - clock_mhz) % self.step_mhz == 0
        if not ok:
            raise ClockError(f"{clock_mhz:g} MHz is not a supported SM clock of {self.gpu} ({self.describe()})")

    def voltage_ratio(self, clock_mhz: float) -> float:
        """V(f) / V(f_max): flat below the voltage floor, linear from there up to the maximum clock."""
        if clock_mhz <= self.voltage_floor_mhz or self.voltage_floor_mhz == self.max_mhz:
            return self.floor_voltage_ratio
        rise = (clock_mhz - self.voltage_floor_mhz) / (self.max_mhz - self.voltage_floor_mhz)
        return self.floor_voltage_ratio + (1.0 - self.floor_voltage_ratio) * rise


def coefficients_at(
    time_coef_s: np.ndarray, energy_coef_j: np.ndarray, idle_power_w: float, spec: ClockSpec, clock_mhz: float
) -> tuple[np.ndarray, np.ndarray]:
    """(time s, energy J) coefficients at SM clock `clock_mhz` from those at the maximum clock; pure.

    The clock is checked against `spec` (ClockError); at the maximum clock the inputs are returned.
    """
    t, e, stretch, moving = _scaling(time_coef_s, energy_coef_j, spec, clock_mhz)
    if clock_mhz == spec.max_mhz:
        return t.copy(), e.copy()
    static = np.minimum(idle_power_w * t, e)  # J per feature unit drawn as idle power at f_max
    return t * stretch, static * stretch + (e - static) * moving


def _scaling(
    time_coef_s: np.ndarray, energy_coef_j: np.ndarray, spec: ClockSpec, clock_mhz: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The coefficients as arrays (the clock checked), and at `clock_mhz` each feature's time
    stretch and the factor of its above-idle energy ((1 − φ) data movement + φ switching)."""
    spec.check(clock_mhz)
    t = np.asarray(time_coef_s, dtype=float)
    e = np.asarray(energy_coef_j, dtype=float)
    share = np.zeros(t.shape[-1])  # the expert reads and the overlap's weights are memory-bound
    share[: COMPUTE_SHARE.size] = COMPUTE_SHARE
    if share.size > OVERLAP_TOKEN:
        share[OVERLAP_TOKEN] = 1.0  # the overlap's prompt token is compute
    stretch = (1.0 - share) + share * (spec.max_mhz / clock_mhz)
    phi = spec.dynamic_fraction
    switching = (clock_mhz / spec.max_mhz) * spec.voltage_ratio(clock_mhz) ** 2 * stretch
    return t, e, stretch, (1.0 - phi) + phi * switching


def clock_spec(gpu: str) -> ClockSpec:
    """The clock parameters of a GPU named as an oracle names it ('NVIDIA H100 SXM5 80GB' or 'h100')."""
    from oracle.clock_specs import CLOCK_SPECS  # the table builds ClockSpecs: imported here, not in a cycle

    found = find_gpu(gpu)
    spec = CLOCK_SPECS.get(found.name) if found is not None else None
    if spec is None:
        raise ClockError(f"no clock parameters for GPU {gpu!r}; known: {', '.join(sorted(CLOCK_SPECS))}")
    return spec


def at_clock(oracle: Oracle, clock_mhz: float | None) -> Oracle:
    """The oracle with its SM clock locked at `clock_mhz` (None or the maximum: the oracle itself).

    Raises ClockError for a GPU without clock parameters or a clock it does not support.
    """
    if clock_mhz is None:
        return oracle
    spec = clock_spec(oracle.gpu)
    x, o = oracle.experts, oracle.overlap
    time_coef, energy_coef = coefficients_at(
        *with_reads(oracle.time_coef_s, oracle.energy_coef_j, x, o), oracle.idle_power_w, spec, clock_mhz
    )
    if clock_mhz == spec.max_mhz:
        return oracle
    settings = {**oracle.settings, "clock_mhz": float(clock_mhz)}
    experts = None if x is None else replace(x, time_s=float(time_coef[6]), energy_j=float(energy_coef[6]))
    hide = None
    if o is not None:
        hide = Overlap(float(time_coef[7]), float(time_coef[8]), float(energy_coef[7]), float(energy_coef[8]))
    return replace(
        oracle,
        energy_coef_j=energy_coef[:6],
        time_coef_s=time_coef[:6],
        settings=settings,
        experts=experts,
        overlap=hide,
    )


def coefficients_at_max(
    time_coef_s: np.ndarray, energy_coef_j: np.ndarray, idle_power_w: float, spec: ClockSpec, clock_mhz: float
) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `coefficients_at`: (time s, energy J) coefficients at the maximum clock from
    those at `clock_mhz`. A coefficient whose energy at that clock is below its idle-power share
    kept all its energy as static (`coefficients_at`'s second case)."""
    t, e, stretch, moving = _scaling(time_coef_s, energy_coef_j, spec, clock_mhz)
    if clock_mhz == spec.max_mhz:
        return t.copy(), e.copy()
    t_max = t / stretch
    static = idle_power_w * t_max
    e_max = np.where(e >= idle_power_w * t, static + (e - static * stretch) / moving, e / stretch)
    return t_max, e_max


def ladder(oracle: Oracle) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clocks a power cap can throttle the oracle's GPU to, from its own clock (its
    `clock_mhz` setting, else the maximum) down to the lowest supported one: (clocks MHz
    descending, time coefficients s (levels × 9), energy coefficients J (levels × 9): the six step
    coefficients, then the expert reads of `Oracle.experts` (0 for a dense model) and the prefill
    overlap's weights and prompt token (`Oracle.overlap`; 0 without one)). Level 0 is the
    oracle's own coefficients, unchanged. ClockError for a GPU without clock parameters."""
    spec = clock_spec(oracle.gpu)
    own = float(oracle.settings.get("clock_mhz", spec.max_mhz))
    t0, e0 = with_reads(oracle.time_coef_s, oracle.energy_coef_j, oracle.experts, oracle.overlap)
    t_max, e_max = coefficients_at_max(t0, e0, oracle.idle_power_w, spec, own)
    clocks = spec.supported_mhz[::-1]
    clocks = clocks[clocks <= own]
    levels = [(t0, e0)] + [coefficients_at(t_max, e_max, oracle.idle_power_w, spec, float(f)) for f in clocks[1:]]
    return clocks.astype(float), np.array([t for t, _ in levels]), np.array([e for _, e in levels])

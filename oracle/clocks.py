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

from dataclasses import replace
from typing import Final

import numpy as np

from oracle.arch import find_gpu
from oracle.clock_specs import CLOCK_SPECS, ClockError, ClockSpec
from oracle.model import Oracle, Overlap, with_reads

COMPUTE_SHARE: Final = np.array([0.0, 0.5, 0.0, 0.5, 1.0, 1.0])
"""κ_i: the share of each feature's time that scales with f_max / f (order of `features.FEATURES`)."""
OVERLAP_TOKEN: Final = 8
"""The column of `with_reads`' layout holding the prefill overlap's prompt-token compute."""


def coefficients_at(
    time_coef_s: np.ndarray,
    energy_coef_j: np.ndarray,
    idle_power_w: float,
    spec: ClockSpec,
    clock_mhz: float | np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(time s, energy J) coefficients at SM clock `clock_mhz` from those at the maximum clock; pure.

    The clock is checked against `spec` (ClockError); at the maximum clock the inputs are returned.
    `clock_mhz` may be an array of clocks (shape (L, 1)): then the coefficients at each, (L, columns).
    """
    t, e, stretch, moving = _scaling(time_coef_s, energy_coef_j, spec, clock_mhz)
    if np.ndim(clock_mhz) == 0 and clock_mhz == spec.max_mhz:
        return t.copy(), e.copy()
    static = np.minimum(idle_power_w * t, e)  # J per feature unit drawn as idle power at f_max
    return t * stretch, static * stretch + (e - static) * moving


def _scaling(
    time_coef_s: np.ndarray, energy_coef_j: np.ndarray, spec: ClockSpec, clock_mhz: float | np.ndarray
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
    f = np.asarray(clock_mhz, dtype=float)
    stretch = (1.0 - share) + share * (spec.max_mhz / f)
    phi = spec.dynamic_fraction
    switching = (f / spec.max_mhz) * spec.voltage_ratio(f) ** 2 * stretch
    return t, e, stretch, (1.0 - phi) + phi * switching


def clock_spec(gpu: str) -> ClockSpec:
    """The default clock parameters of a GPU named as an oracle names it ('NVIDIA H100 SXM5 80GB' or 'h100')."""
    found = find_gpu(gpu)
    spec = CLOCK_SPECS.get(found.name) if found is not None else None
    if spec is None:
        raise ClockError(f"no clock parameters for GPU {gpu!r}; known: {', '.join(sorted(CLOCK_SPECS))}")
    return spec


def clock_spec_of(oracle: Oracle) -> ClockSpec:
    """The clock parameters an oracle runs with: those fitted with it (`Oracle.clock`), else its GPU's."""
    return oracle.clock if oracle.clock is not None else clock_spec(oracle.gpu)


def at_clock(oracle: Oracle, clock_mhz: float | None) -> Oracle:
    """The oracle with its SM clock locked at `clock_mhz` (None or the maximum: the oracle itself).

    Raises ClockError for a GPU without clock parameters or a clock it does not support.
    """
    if clock_mhz is None:
        return oracle
    spec = clock_spec_of(oracle)
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
    spec = clock_spec_of(oracle)
    own = float(oracle.settings.get("clock_mhz", spec.max_mhz))
    t0, e0 = with_reads(oracle.time_coef_s, oracle.energy_coef_j, oracle.experts, oracle.overlap)
    t_max, e_max = coefficients_at_max(t0, e0, oracle.idle_power_w, spec, own)
    clocks = spec.supported_mhz[::-1]
    clocks = clocks[clocks <= own]
    t, e = coefficients_at(t_max, e_max, oracle.idle_power_w, spec, clocks[1:, None].astype(float))
    return clocks.astype(float), np.vstack([t0, t]), np.vstack([e0, e])

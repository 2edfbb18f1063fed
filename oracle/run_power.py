"""Refuse measurement tables whose runs imply a power no GPU draws: the mark of a unit mistake.

A run's mean power is energy_j / duration_s (W). A table in kWh implies ~1e-4 W per run: the fit
then cannot satisfy the power limits and ran for minutes before. Each run's mean power must lie
within `TOLERANCE` times the GPU's [idle power, power limit]; the check is loose on purpose (it is
there for unit mistakes, factors of 60 to 3.6e6, while the fit's own power constraint handles
smaller excesses), and it admits up to `TOLERANCE` GPUs' draw where the limit comes from a
one-GPU datasheet (a run's energy, like the measured idle_power_w and power_limit_w columns, is
summed over its GPUs).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TOLERANCE = 10.0  # factor by which a run's mean power may lie below idle power or above the power limit
MIN_POWER_W = 1.0  # lowest mean power of a run when the idle power is unknown (0), W
MAX_POWER_W = 20_000.0  # highest mean power of a run when the power limit is unknown (an 8-GPU node draws less), W
SHOWN_ROWS = 5  # offending rows named in the error

# Factor that brings a mean power computed from mis-scaled columns back to W, and the mistake it undoes.
UNIT_MISTAKES = (
    (3.6e6, "energy_j looks like kWh: multiply it by 3.6e6"),
    (3.6e3, "energy_j looks like Wh: multiply it by 3600"),
    (1e3, "energy_j looks like kJ (multiply it by 1000) or duration_s like ms (divide it by 1000)"),
    (1e-3, "energy_j looks like mJ: divide it by 1000"),
    (1 / 60, "duration_s looks like minutes: multiply it by 60"),
    (1 / 3600, "duration_s looks like hours: multiply it by 3600"),
)


class ImplausiblePowerError(ValueError):
    """Runs whose mean power (energy_j / duration_s) no GPU could draw."""


def power_range_w(idle_power_w: float, power_limit_w: float | None) -> tuple[float, float]:
    """The [low, high] mean power (W) a run may show: `TOLERANCE` beyond idle power and the limit."""
    low = max(idle_power_w / TOLERANCE, MIN_POWER_W)
    high = power_limit_w * TOLERANCE if power_limit_w is not None else MAX_POWER_W
    return low, high


def check_run_power(table: pd.DataFrame, idle_power_w: float, power_limit_w: float | None) -> None:
    """Raise ImplausiblePowerError naming the rows (0-based) whose mean power is out of range.

    The message names the first `SHOWN_ROWS` rows with their mean power and the likeliest unit
    mistake (`likely_mistake`).
    """
    power = table["energy_j"].to_numpy(float) / table["duration_s"].to_numpy(float)
    low, high = power_range_w(idle_power_w, power_limit_w)
    rows = np.flatnonzero((power < low) | (power > high))
    if rows.size == 0:
        return
    shown = ", ".join(f"row {r} ({power[r]:.3g} W)" for r in rows[:SHOWN_ROWS])
    more = f" and {rows.size - SHOWN_ROWS} more" if rows.size > SHOWN_ROWS else ""
    limit = "unknown" if power_limit_w is None else f"{power_limit_w:g} W"
    raise ImplausiblePowerError(
        f"{rows.size} of {len(table)} rows imply a mean power (energy_j / duration_s) outside {low:g}–{high:g} W "
        f"({TOLERANCE:g}× beyond idle power {idle_power_w:g} W and power limit {limit}): {shown}{more}. "
        f"{likely_mistake(power[rows], low, high)}"
    )


def likely_mistake(power_w: np.ndarray, low: float, high: float) -> str:
    """The unit mistake whose correction brings the median of `power_w` into [low, high] W, nearest
    the middle of that range in log scale; else a plain request to check the units."""
    median = float(np.median(power_w))
    middle = np.sqrt(low * high)
    fits = [(abs(np.log(median * f / middle)), text) for f, text in UNIT_MISTAKES if low <= median * f <= high]
    if not fits:
        return "Check that energy_j is in J and duration_s in s."
    return f"Likely a unit mistake: {min(fits)[1]}."

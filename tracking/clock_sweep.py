"""Clock sweeps in a comparison: runs that differ only in their locked SM clock (`gpu.clock_mhz`),
their energy-latency curve and its sweet spots.

    python -m sim -m gpu.clock_mhz=690,990,1290,1590,1980 && python -m sim.report --sweep multirun/...

A sweep is three or more runs of one group (trace and load), policy, power cap and `static` clock
policy at different clocks. Its sweet spots: the clock with the least energy per output token
(per step, static power makes it U-shaped in the clock, Maliakel et al., arXiv 2501.08219; over a
run at a given load the idle power is paid either way, so it falls until the GPU saturates); the
energy-delay optimum, the least energy per token × median TPOT (the figure of merit of the
`ai-inference-energy` study the clock issue cites); and the least energy per token among the runs
that meet the SLO as often as the highest clock does, to `SLO_POINTS` (the operator's answer). Each run is placed at its
SM clock averaged over busy time (`mean_clock_mhz`: a locked clock, less where the board's power
limit throttled long prefills), else at the clock it locked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tracking.text_table import to_markdown

SWEEP_KEYS = ("group", "policy", "power_limit_w", "clock_policy")
"""Runs that share these and differ in `clock_mhz` form one sweep."""
MIN_CLOCKS = 3
SLO_POINTS = 0.01
"""SLO attainment a clock may lose against the highest clock swept and still count as meeting it."""
MARKS = (("energy", "o", "least energy per token"), ("energy_delay", "D", "energy-delay optimum"),
         ("slo", "s", "least energy meeting the SLO"))  # fmt: skip
"""(sweet spot, marker, legend) of `plot`."""
COLUMNS = ("label", "clock_mhz", "energy_per_output_token_j", "tpot_s.p50", "tpot_s.p99", "slo_attainment")


def clock_sweeps(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each sweep of `table` (`tracking.report.comparison_table`'s rows), by a name saying what it
    holds fixed: its runs by clock (MHz, ascending) with the `COLUMNS`."""
    if "clock_mhz" not in table or "energy_per_output_token_j" not in table:
        return {}
    out = {}
    static = table[table["clock_policy"].isin(["static", "?"])]
    for key, rows in static.groupby(list(SWEEP_KEYS), sort=True):
        if rows["clock_mhz"].nunique() < MIN_CLOCKS or rows["energy_per_output_token_j"].isna().any():
            continue
        locked = pd.to_numeric(rows["clock_mhz"], errors="coerce")
        mean = rows["mean_clock_mhz"] if "mean_clock_mhz" in rows else pd.Series(np.nan, index=rows.index)
        sweep = rows.assign(clock_mhz=mean.where(mean.notna(), locked))
        if sweep["clock_mhz"].isna().any():
            continue  # a run at the maximum clock of a GPU whose clock is unknown: no place on the axis
        group, policy, cap, _ = key
        name = f"{group}, {policy}" + ("" if cap in ("board", "?") else f", cap {cap} W")
        out[name] = sweep.sort_values("clock_mhz")[list(COLUMNS)].reset_index(drop=True)
    return out


def sweet_spots(sweep: pd.DataFrame) -> dict[str, pd.Series]:
    """A sweep's run with the least energy per output token (`energy`), the least energy per token
    × median TPOT (`energy_delay`), and the least energy per token of those whose SLO attainment is
    within `SLO_POINTS` of the highest clock's (`slo`)."""
    e = sweep["energy_per_output_token_j"]
    meets = sweep["slo_attainment"] >= sweep["slo_attainment"].iloc[-1] - SLO_POINTS
    return {
        "energy": sweep.loc[e.idxmin()],
        "energy_delay": sweep.loc[(e * sweep["tpot_s.p50"]).idxmin()],
        "slo": sweep.loc[e[meets].idxmin()],
    }


def describe(sweep: pd.DataFrame) -> str:
    """One sentence: where the sweet spots lie, against the highest clock swept."""
    top = sweep.iloc[-1]
    spots = sweet_spots(sweep)

    def against(row: pd.Series) -> str:
        energy = 100.0 * (row["energy_per_output_token_j"] / top["energy_per_output_token_j"] - 1.0)
        tpot = 100.0 * (row["tpot_s.p50"] / top["tpot_s.p50"] - 1.0)
        return (f"{row['clock_mhz']:.0f} MHz ({row['label']}: {energy:+.1f} % energy per output token, "
                f"{tpot:+.1f} % median TPOT)")  # fmt: skip

    return (
        f"against {top['clock_mhz']:.0f} MHz, the least energy per output token is at {against(spots['energy'])}; "
        f"the energy-delay optimum at {against(spots['energy_delay'])}; the least energy meeting the SLO as "
        f"often as the highest clock (within {100 * SLO_POINTS:g} point) at {against(spots['slo'])}"
    )


def markdown(sweeps: dict[str, pd.DataFrame]) -> str:
    """The report's clock-sweep section: each sweep's runs by clock and its sweet spots ('' if none)."""
    parts = [f"### {name}\n\n{to_markdown(s)}\n{describe(s)}.\n" for name, s in sweeps.items()]
    return "\n".join(parts)


def plot(sweeps: dict[str, pd.DataFrame], path: Path) -> Path:
    """clocks.png: per sweep, energy per output token against the SM clock (its U and the least
    energy marked) and against median TPOT (the energy-latency curve, points labelled in MHz)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(sweeps), 2, figsize=(12, 4.2 * len(sweeps)), squeeze=False)
    for (name, s), (by_clock, curve) in zip(sweeps.items(), axes, strict=True):
        e = 1e3 * s["energy_per_output_token_j"]
        tpot = 1e3 * s["tpot_s.p50"]
        spots = sweet_spots(s)
        by_clock.plot(s["clock_mhz"], e, "o-", color="C0")
        curve.plot(tpot, e, "o-", color="C0")
        for mhz, x, y in zip(s["clock_mhz"], tpot, e, strict=True):
            curve.annotate(f"{mhz:.0f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        for key, marker, label in MARKS:
            row = spots[key]
            y = 1e3 * row["energy_per_output_token_j"]
            by_clock.plot(row["clock_mhz"], y, marker, mfc="none", ms=12, mew=1.5, label=label, zorder=3)
            curve.plot(1e3 * row["tpot_s.p50"], y, marker, mfc="none", ms=12, mew=1.5, zorder=3)
        by_clock.set(xlabel="SM clock (MHz, mean over busy time)", ylabel="energy per output token (mJ)", title=name)
        curve.set(xlabel="median TPOT (ms)", ylabel="energy per output token (mJ)", title="energy against latency")
        by_clock.legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

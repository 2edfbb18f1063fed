"""Plots of load and fleet size: queue length and throughput over time (load.png), the SM clock
over time (clock.png, when a power cap or a clock controller moves it), each replica's power and
batch size (replicas.png, a fleet of more than one server) and the capacity search (capacity.png:
probes that meet the SLO and probes that miss it in two colours)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sim.config import SloConfig
from sim.plots.figure import PlotRun, figure, line_style, save

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LOAD_PLOT = "load.png"
CLOCK_PLOT = "clock.png"
REPLICAS_PLOT = "replicas.png"
CAPACITY_PLOT = "capacity.png"
OVERLAID = 8
"""Most replicas drawn one line each; a larger fleet is drawn as its median and min–max band."""
MET, MISSED = "C2", "C3"  # capacity probes that meet the SLO, and that miss it


def plot_load(runs: Sequence[PlotRun], path: Path) -> Path:
    """Requests queued (arrived, not yet started; mean per bin) and throughput (output tokens/s,
    all GPUs) over simulated time, one line per run."""
    fig = figure(9, 5.5, left_in=1.0, hspace=0.12)
    queue, rate = fig.subplots(2, 1, sharex=True)
    for k, run in enumerate(runs):
        t = run.timelines["t_s"] / 60.0
        queue.plot(t, run.timelines["queued"], label=run.label, **line_style(k))
        rate.plot(t, run.timelines["tokens_per_s"], label=run.label, **line_style(k))
    queue.set(ylabel="requests queued\n(not yet started)", title="Queue length and throughput over time")
    rate.set(xlabel="simulated time (min)", ylabel="throughput\n(output tokens/s)")
    queue.legend(loc="upper right")
    return save(fig, path)


def clock_moves(runs: Sequence[PlotRun]) -> bool:
    """Whether any run's SM clock is known and not the same all along (a flat line says nothing)."""
    values = [run.timelines["clock_mhz"].to_numpy(float) for run in runs if "clock_mhz" in run.timelines]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    return bool(finite.size) and float(finite.max() - finite.min()) > 0.5


def plot_clock(runs: Sequence[PlotRun], path: Path) -> Path:
    """The SM clock (MHz, averaged over each time bin's busy GPU time) over simulated time, one
    line per run: where a power cap or a clock controller lowered it. Idle bins are gaps."""
    fig = figure(9, 3.5, left_in=1.0)
    ax = fig.subplots(1, 1, squeeze=False)[0, 0]
    for k, run in enumerate(runs):
        ax.plot(run.timelines["t_s"] / 60.0, run.timelines["clock_mhz"], label=run.label, **line_style(k))
    ax.set(
        xlabel="simulated time (min)",
        ylabel="SM clock (MHz)",
        title="GPU clock over time (mean over busy time per bin)",
    )
    ax.legend(loc="lower right")
    return save(fig, path)


REPLICA_PANELS = (("power_w", "power (W)"), ("running", "sequences per step"), ("queued", "requests queued"))


def plot_replicas(frame: pd.DataFrame, path: Path) -> Path:
    """Each replica's power (W), batch size and queue over simulated time: one line per replica up
    to `OVERLAID` replicas, else the replicas' median and min–max band."""
    fig = figure(9, 7, left_in=1.0, hspace=0.12)
    axes = fig.subplots(len(REPLICA_PANELS), 1, sharex=True)
    names = frame.drop_duplicates("replica").set_index("replica")["name"]
    for ax, (col, label) in zip(axes, REPLICA_PANELS, strict=True):
        wide = frame.pivot(index="t_s", columns="replica", values=col)
        t = wide.index.to_numpy() / 60.0
        if len(names) <= OVERLAID:
            for replica, values in wide.items():
                ax.plot(t, values, lw=0.9, label=str(names[replica]))
        else:
            _band(ax, t, wide.to_numpy())
        ax.set_ylabel(label)
    axes[0].set_title(f"Per replica: power, batch size and queue ({len(names)} replicas)", loc="left")
    axes[0].legend(fontsize=7, ncols=min(len(names), 4), loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    axes[-1].set_xlabel("simulated time (min)")
    return save(fig, path)


def _band(ax: Axes, t: np.ndarray, values: np.ndarray) -> None:
    """The median over replicas (columns of `values`) and its min–max band."""
    ax.fill_between(t, values.min(axis=1), values.max(axis=1), color="C0", alpha=0.25, lw=0, label="min–max")
    ax.plot(t, np.median(values, axis=1), color="C0", lw=0.9, label="median")


def plot_capacity(capacity: dict[str, Any], slo: SloConfig, path: Path) -> Path:
    """Capacity search: TTFT and TPOT at the target percentile (log s) and energy (MJ) per fleet
    size; each probe's marker green if it meets the SLO, red if it misses it."""
    from matplotlib.ticker import MaxNLocator

    probes = sorted(capacity["probes"], key=lambda p: p["replicas"])
    n = [p["replicas"] for p in probes]
    fig = figure(10, 3.5, wspace=0.3)
    lat, en = fig.subplots(1, 2)
    for key, target, color in (("ttft_s", slo.ttft_s, "C0"), ("tpot_s", slo.tpot_s, "C1")):
        lat.plot(n, [p[key] for p in probes], "-", color=color, label=key.split("_")[0].upper())
        lat.axhline(target, color=color, ls="--", lw=0.8)
        _probes(lat, probes, key, 1.0)
    lat.axvline(capacity["replicas"], color="k", lw=0.8, ls=":", label=f"answer: {capacity['replicas']}")
    lat.set(yscale="log", xlabel=f"replicas in pool {capacity['pool']!r}", ylabel="latency (s); dashed: SLO")
    lat.legend(fontsize=8)
    for ax in (lat, en):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    en.plot(n, [p["energy_j"] / 1e6 for p in probes], "-", color="0.5")
    _probes(en, probes, "energy_j", 1e-6, legend=True)
    en.set(xlabel=f"replicas in pool {capacity['pool']!r}", ylabel="energy over the trace (MJ)")
    en.legend(fontsize=8)
    fig.suptitle(capacity["target"], fontsize=9)
    return save(fig, path)


def _probes(ax: Axes, probes: list[dict[str, Any]], key: str, scale: float, legend: bool = False) -> None:
    """Each probe's `key` × `scale` as a marker: `MET` (circle) if it met the SLO, else `MISSED` (cross)."""
    for met, color, marker, label in ((True, MET, "o", "meets the SLO"), (False, MISSED, "X", "misses the SLO")):
        chosen = [p for p in probes if bool(p["met"]) == met]
        if chosen:
            ax.scatter([p["replicas"] for p in chosen], [p[key] * scale for p in chosen], color=color,
                       marker=marker, zorder=3, label=label if legend else None)  # fmt: skip

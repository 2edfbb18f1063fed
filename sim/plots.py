"""Plots of a run: power over time and per-request energy (policy against baseline), capacity search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim.config import SloConfig
from sim.metrics import power_timeline
from sim.run import SimResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_power(runs: list[SimResult], path: Path, horizon_s: float | None = None) -> Path:
    """Mean GPU power (W, idle included) over simulated time, one line per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for run in runs:
        t, p = power_timeline(run, horizon_s)
        ax.plot(t / 60.0, p, lw=0.9, label=run.policy)
    ax.set_xlabel("simulated time (min)")
    ax.set_ylabel("power (W)")
    ax.set_title("GPU power over time")
    ax.legend()
    return _save(plt, fig, path)


def plot_energy(runs: list[SimResult], path: Path) -> Path:
    """Distribution of per-request energy (J, log bins), one histogram per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    energies = [r.requests.loc[r.requests["completed"], "energy_j"].to_numpy() for r in runs]
    positive = np.concatenate([e[e > 0] for e in energies] or [np.ones(1)])
    lo, hi = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
    bins = np.geomspace(lo, max(hi, lo * 1.01), 60)
    for run, e in zip(runs, energies, strict=True):
        ax.hist(e[e > 0], bins=bins, histtype="step", lw=1.2, label=f"{run.policy} (mean {e.mean():.1f} J)")
    ax.set_xscale("log")
    ax.set_xlabel("energy per request (J)")
    ax.set_ylabel("requests")
    ax.legend()
    return _save(plt, fig, path)


def plot_capacity(capacity: dict[str, Any], slo: SloConfig, path: Path) -> Path:
    """Capacity search: TTFT and TPOT at the target percentile (log s) and energy (MJ) per fleet size."""
    plt = _pyplot()
    probes = sorted(capacity["probes"], key=lambda p: p["replicas"])
    n = [p["replicas"] for p in probes]
    fig, (lat, en) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key, target, color in (("ttft_s", slo.ttft_s, "C0"), ("tpot_s", slo.tpot_s, "C1")):
        lat.plot(n, [p[key] for p in probes], "o-", color=color, label=key.split("_")[0].upper())
        lat.axhline(target, color=color, ls="--", lw=0.8)
    lat.axvline(capacity["replicas"], color="k", lw=0.8, ls=":", label=f"answer: {capacity['replicas']}")
    lat.set_yscale("log")
    lat.set_xlabel(f"replicas in pool {capacity['pool']!r}")
    lat.set_ylabel("latency (s); dashed: SLO")
    lat.legend()
    en.plot(n, [p["energy_j"] / 1e6 for p in probes], "o-", color="C2")
    en.scatter([p["replicas"] for p in probes if p["met"]], [p["energy_j"] / 1e6 for p in probes if p["met"]],
               color="C2", zorder=3, label="meets the SLO")  # fmt: skip
    en.set_xlabel(f"replicas in pool {capacity['pool']!r}")
    en.set_ylabel("energy over the trace (MJ)")
    en.legend()
    fig.suptitle(capacity["target"], fontsize=9)
    return _save(plt, fig, path)

"""Plots of a run, policy against baseline: power over time (and its difference), CDFs of latency
and per-request energy, batch size and KV-cache use over time, the capacity search.

Figures are drawn straight on the Agg canvas (`matplotlib.figure.Figure`, no pyplot and its
global figure list) with fixed margins: laying a figure out (`tight_layout`) draws it once more,
and that was a third of the plotting time. CDFs draw at most `CDF_POINTS` points per line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.config import SloConfig
from sim.metrics import power_timeline
from sim.run import SimResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120
CDF_POINTS = 1000
"""Most points drawn per CDF line: the ranks are evenly spaced, the first and last always kept."""


def _figure(
    width_in: float,
    height_in: float,
    left_in: float = 0.85,
    bottom_in: float = 0.6,
    top_in: float = 0.4,
    right_in: float = 0.2,
    wspace: float = 0.25,
    hspace: float = 0.3,
) -> Figure:
    """A figure on the Agg canvas with fixed margins (inches; `wspace` and `hspace` are shares of
    a subplot's width and height)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in))
    fig.subplots_adjust(left=left_in / width_in, right=1 - right_in / width_in, bottom=bottom_in / height_in,
                        top=1 - top_in / height_in, wspace=wspace, hspace=hspace)  # fmt: skip
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def cdf_points(values: np.ndarray, points: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(sorted values, share of values ≤ each) at no more than `points` evenly spaced ranks, the
    smallest and largest included."""
    v = np.sort(values)
    keep = np.unique(np.linspace(0, v.size - 1, min(points, v.size)).round().astype(np.int64))
    return v[keep], (keep + 1) / v.size


def plot_power(runs: list[SimResult], path: Path, horizon_s: float | None = None, gpus: str = "one GPU") -> Path:
    """Power (W, idle included; `gpus` says one GPU or the fleet's sum) over simulated time, one
    line per run, and below it the policy's power minus the baseline's."""
    fig = _figure(9, 5 if len(runs) > 1 else 3.5, hspace=0.12)
    axes = fig.subplots(2 if len(runs) > 1 else 1, 1, sharex=True, squeeze=False)
    lines = [power_timeline(run, horizon_s) for run in runs]
    for run, (t, p) in zip(runs, lines, strict=True):
        axes[0, 0].plot(t / 60.0, p, lw=0.9, label=f"{run.policy} (baseline)" if run is not runs[0] else run.policy)
    axes[0, 0].set_ylabel("power (W)")
    axes[0, 0].set_title(f"GPU power over time ({gpus})")
    axes[0, 0].legend()
    if len(runs) > 1:
        (t, p), (_, b) = lines[0], lines[-1]
        axes[1, 0].plot(t / 60.0, p - b, lw=0.9, color="C2")
        axes[1, 0].axhline(0.0, color="k", lw=0.6)
        axes[1, 0].set_ylabel(f"{runs[0].policy} − baseline (W)")
    axes[-1, 0].set_xlabel("simulated time (min)")
    return _save(fig, path)


CDFS = (("ttft_s", "TTFT (s)"), ("tpot_s", "TPOT (s)"), ("e2e_s", "end-to-end latency (s)"),
        ("energy_j", "energy per request (J)"))  # fmt: skip


def plot_cdfs(runs: list[SimResult], path: Path) -> Path:
    """CDFs over completed requests of TTFT, TPOT, end-to-end latency and energy, one line per run."""
    fig = _figure(10, 6.5, top_in=0.15, hspace=0.35)
    axes = fig.subplots(2, 2)
    for ax, (col, label) in zip(axes.flat, CDFS, strict=True):
        for k, run in enumerate(runs):
            r = run.requests
            v = r.loc[r["completed"], col].to_numpy(dtype=float)
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                name = run.policy if k == 0 else f"{run.policy} (baseline)"
                ax.step(*cdf_points(v), where="post", label=name, lw=1.1)
        ax.set(xscale="log", xlabel=label, ylabel="share of requests ≤ x")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def batch_timeline(run: SimResult, horizon_s: float | None = None, bins: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres s, sequences per step averaged over time and GPUs; idle GPUs count 0)."""
    return span_timeline(run, "span_running", horizon_s, bins)


def span_timeline(
    run: SimResult, field: str, horizon_s: float | None = None, bins: int = 300
) -> tuple[np.ndarray, np.ndarray]:
    """(bin centres s, a per-span quantity of the servers' span logs, e.g. `span_running` or
    `span_kv_used`, averaged over time and GPUs; idle time counts 0)."""
    horizon = max(run.makespan_s, horizon_s or 0.0, 1e-9)
    edges = np.linspace(0.0, horizon, bins + 1)
    total = np.zeros(bins)
    for s in run.servers:
        if not s.span_s.size:
            continue
        t = np.concatenate([s.span_start_s, s.span_start_s + s.span_s])
        area = getattr(s, field) * s.span_s  # quantity × seconds
        cum = np.concatenate([np.cumsum(area) - area, np.cumsum(area)])
        order = np.argsort(t, kind="stable")
        total += np.diff(np.interp(edges, t[order], cum[order], left=0.0, right=cum.max()))
    return 0.5 * (edges[1:] + edges[:-1]), total / np.diff(edges) / max(len(run.servers), 1)


def plot_batch(runs: list[SimResult], path: Path, horizon_s: float | None = None) -> Path:
    """Running sequences per step (batch size) and KV-cache use (%) over simulated time, mean over
    GPUs, one line per run."""
    fig = _figure(9, 5.5, left_in=1.0, hspace=0.12)
    ax, kv = fig.subplots(2, 1, sharex=True)
    for k, run in enumerate(runs):
        label = run.policy if k == 0 else f"{run.policy} (baseline)"
        t, b = batch_timeline(run, horizon_s)
        ax.plot(t / 60.0, b, lw=0.9, label=label)
        t, used = span_timeline(run, "span_kv_used", horizon_s)
        kv.plot(t / 60.0, 100.0 * used, lw=0.9, label=label)
    ax.set(ylabel="sequences per step\n(mean per GPU)", title="Batch size and KV-cache use over time")
    kv.set(xlabel="simulated time (min)", ylabel="KV cache held (%)\n(mean per GPU)")
    ax.legend()
    return _save(fig, path)


def plot_energy(runs: list[SimResult], path: Path) -> Path:
    """Distribution of per-request energy (J, log bins), one histogram per run."""
    fig = _figure(7, 3.5, top_in=0.15)
    ax = fig.subplots()
    energies = [r.requests.loc[r.requests["completed"], "energy_j"].to_numpy() for r in runs]
    positive = np.concatenate([e[e > 0] for e in energies] or [np.ones(1)])
    lo, hi = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
    bins = np.geomspace(lo, max(hi, lo * 1.01), 60)
    for run, e in zip(runs, energies, strict=True):
        ax.hist(e[e > 0], bins=bins.tolist(), histtype="step", lw=1.2, label=f"{run.policy} (mean {e.mean():.1f} J)")
    ax.set_xscale("log")
    ax.set_xlabel("energy per request (J)")
    ax.set_ylabel("requests")
    ax.legend()
    return _save(fig, path)


def plot_capacity(capacity: dict[str, Any], slo: SloConfig, path: Path) -> Path:
    """Capacity search: TTFT and TPOT at the target percentile (log s) and energy (MJ) per fleet size."""
    probes = sorted(capacity["probes"], key=lambda p: p["replicas"])
    n = [p["replicas"] for p in probes]
    fig = _figure(10, 3.5, wspace=0.3)
    lat, en = fig.subplots(1, 2)
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
    return _save(fig, path)

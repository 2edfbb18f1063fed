"""Plots of a run, policy against baseline: power over time (and its difference), CDFs of latency
and per-request energy, batch size and KV-cache use over time, the capacity search.

The plots are drawn from the run's folder alone (`plot_folder`): its summary.json, its records'
plotted columns and timelines.parquet, the binned power, batch and KV-cache timelines the run
wrote (`timelines`). So the figures can be drawn by another process after the run (the
background finisher of `python -m sim`) or again later:

    python -m sim.plots outputs/2026-01-01/12-00-00.123456

Figures are drawn straight on the Agg canvas (`matplotlib.figure.Figure`, no pyplot and its
global figure list) with fixed margins: laying a figure out (`tight_layout`) draws it once more,
and that was a third of the plotting time. CDFs draw at most `CDF_POINTS` points per line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import yaml

from sim.config import ConfigError, SloConfig, build
from sim.run import SimResult
from tracking.files import replacing

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 120
CDF_POINTS = 1000
"""Most points drawn per CDF line: the ranks are evenly spaced, the first and last always kept."""
TIMELINE_BINS = 500
TIMELINES_FILE = "timelines.parquet"
RECORDS_FILES = ("requests.parquet", "requests_baseline.parquet")  # the run's, the baseline's
PLOTTED = ["completed", "ttft_s", "tpot_s", "e2e_s", "energy_j"]  # the per-request columns the plots read
PLOT_FILES = ("power.png", "energy_per_request.png", "cdf.png", "batch.png")
CAPACITY_PLOT = "capacity.png"


@dataclass(frozen=True)
class PlotRun:
    """What the plots draw of one run: its legend label, its records' `PLOTTED` columns and its
    timelines (columns t_s, power_w, running, kv_used: see `timelines`)."""

    label: str
    records: pd.DataFrame
    timelines: pd.DataFrame


def timelines(run: SimResult, horizon_s: float | None = None, bins: int = TIMELINE_BINS) -> pd.DataFrame:
    """A run's timelines over [0, horizon] in `bins` bins: t_s (bin centre, s), power_w (W of all
    GPUs, idle included), running (sequences per step, mean per GPU, idle GPUs 0) and kv_used
    (share of the KV cache held, mean per GPU). Each span's energy, busy time and sequence- and
    KV-seconds are spread evenly over its duration (power varies little within a span)."""
    horizon = max(run.makespan_s, horizon_s or 0.0, 1e-9)
    edges = np.linspace(0.0, horizon, bins + 1)
    width = np.diff(edges)
    power, running, kv = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for s in run.servers:
        if not s.span_s.size:
            power += s.idle_power_w
            continue
        t = np.concatenate([s.span_start_s, s.span_start_s + s.span_s])
        order = np.argsort(t, kind="stable")
        ends = t[order]
        busy = _per_bin(edges, ends, order, s.span_s)
        power += (
            _per_bin(edges, ends, order, s.span_energy_j) + s.idle_power_w * np.maximum(width - busy, 0.0)
        ) / width
        running += _per_bin(edges, ends, order, s.span_running * s.span_s)
        kv += _per_bin(edges, ends, order, s.span_kv_used * s.span_s)
    gpus = max(len(run.servers), 1)
    return pd.DataFrame(
        {"t_s": 0.5 * (edges[1:] + edges[:-1]), "power_w": power, "running": running / width / gpus,
         "kv_used": kv / width / gpus}
    )  # fmt: skip


def _per_bin(edges: np.ndarray, ends: np.ndarray, order: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Per bin of `edges`, the sum of a per-span amount spread evenly over each span; `ends` are
    the spans' starts and ends sorted, `order` the sort that gave them."""
    cum = np.concatenate([np.cumsum(amount) - amount, np.cumsum(amount)])
    return np.diff(np.interp(edges, ends, cum[order], left=0.0, right=cum.max()))


def write_timelines(folder: Path, runs: Sequence[SimResult]) -> Path:
    """timelines.parquet in the run's folder: each run's `timelines` over the longest run's
    makespan, with a column `run` (0: the policy's run, 1: the baseline)."""
    horizon = max(r.makespan_s for r in runs)
    frames = [timelines(r, horizon).assign(run=k) for k, r in enumerate(runs)]
    path = folder / TIMELINES_FILE
    with replacing(path) as tmp:
        pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
    return path


def plot_folder(folder: Path) -> list[str]:
    """Draw a run's plots into its folder from the files the run wrote; the names written."""
    summary = json.loads((folder / "summary.json").read_text())
    lines = pd.read_parquet(folder / TIMELINES_FILE)
    labels = [summary["policy"], f"{(summary.get('baseline') or {}).get('policy', 'none')} (baseline)"]
    runs = [
        PlotRun(labels[k], pd.read_parquet(folder / RECORDS_FILES[k], columns=PLOTTED), lines[lines["run"] == k])
        for k in sorted(set(lines["run"]))
    ]
    replicas = int((summary.get("fleet") or {}).get("replicas", 1))
    paths = [
        plot_power(runs, folder / PLOT_FILES[0], "one GPU" if replicas == 1 else f"sum of {replicas} GPUs"),
        plot_energy(runs, folder / PLOT_FILES[1]),
        plot_cdfs(runs, folder / PLOT_FILES[2]),
        plot_batch(runs, folder / PLOT_FILES[3]),
    ]
    if summary.get("capacity") is not None:
        paths.append(plot_capacity(summary["capacity"], _slo(folder), folder / CAPACITY_PLOT))
    return [p.name for p in paths]


def _slo(folder: Path) -> SloConfig:
    """The run's SLO, from its resolved_config.yaml."""
    raw = yaml.safe_load((folder / "resolved_config.yaml").read_text()) or {}
    return build(SloConfig, raw.get("slo"), "slo")


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
    """(values, share ≤ value) of the empirical CDF at up to `points` evenly spaced ranks, the
    smallest and largest included."""
    v = np.sort(values)
    keep = np.unique(np.linspace(0, v.size - 1, min(points, v.size)).round().astype(np.int64))
    return v[keep], (keep + 1) / v.size


def plot_power(runs: Sequence[PlotRun], path: Path, gpus: str = "one GPU") -> Path:
    """Power (W, idle included; `gpus` says one GPU or the fleet's sum) over simulated time, one
    line per run, and below it the policy's power minus the baseline's."""
    fig = _figure(9, 5 if len(runs) > 1 else 3.5, hspace=0.12)
    axes = fig.subplots(2 if len(runs) > 1 else 1, 1, sharex=True, squeeze=False)
    for run in runs:
        axes[0, 0].plot(run.timelines["t_s"] / 60.0, run.timelines["power_w"], lw=0.9, label=run.label)
    axes[0, 0].set_ylabel("power (W)")
    axes[0, 0].set_title(f"GPU power over time ({gpus})")
    axes[0, 0].legend()
    if len(runs) > 1:
        own, base = runs[0].timelines, runs[-1].timelines
        axes[1, 0].plot(own["t_s"] / 60.0, own["power_w"].to_numpy() - base["power_w"].to_numpy(), lw=0.9,
                        color="C2")  # fmt: skip
        axes[1, 0].axhline(0.0, color="k", lw=0.6)
        axes[1, 0].set_ylabel(f"{runs[0].label} − baseline (W)")
    axes[-1, 0].set_xlabel("simulated time (min)")
    return _save(fig, path)


CDFS = (("ttft_s", "TTFT (s)"), ("tpot_s", "TPOT (s)"), ("e2e_s", "end-to-end latency (s)"),
        ("energy_j", "energy per request (J)"))  # fmt: skip


def plot_cdfs(runs: Sequence[PlotRun], path: Path) -> Path:
    """CDFs over completed requests of TTFT, TPOT, end-to-end latency and energy, one line per run."""
    fig = _figure(10, 6.5, top_in=0.15, hspace=0.35)
    axes = fig.subplots(2, 2)
    for ax, (col, label) in zip(axes.flat, CDFS, strict=True):
        for run in runs:
            r = run.records
            v = r.loc[r["completed"], col].to_numpy(dtype=float)
            v = v[np.isfinite(v) & (v > 0)]
            if v.size:
                ax.step(*cdf_points(v), where="post", label=run.label, lw=1.1)
        ax.set(xscale="log", xlabel=label, ylabel="share of requests ≤ x")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def plot_batch(runs: Sequence[PlotRun], path: Path) -> Path:
    """Running sequences per step (batch size) and KV-cache use (%) over simulated time, mean over
    GPUs, one line per run."""
    fig = _figure(9, 5.5, left_in=1.0, hspace=0.12)
    ax, kv = fig.subplots(2, 1, sharex=True)
    for run in runs:
        t = run.timelines["t_s"] / 60.0
        ax.plot(t, run.timelines["running"], lw=0.9, label=run.label)
        kv.plot(t, 100.0 * run.timelines["kv_used"], lw=0.9, label=run.label)
    ax.set(ylabel="sequences per step\n(mean per GPU)", title="Batch size and KV-cache use over time")
    kv.set(xlabel="simulated time (min)", ylabel="KV cache held (%)\n(mean per GPU)")
    ax.legend()
    return _save(fig, path)


def plot_energy(runs: Sequence[PlotRun], path: Path) -> Path:
    """Distribution of per-request energy (J, log bins), one histogram per run."""
    fig = _figure(7, 3.5, top_in=0.15)
    ax = fig.subplots()
    energies = [r.records.loc[r.records["completed"], "energy_j"].to_numpy() for r in runs]
    positive = np.concatenate([e[e > 0] for e in energies] or [np.ones(1)])
    lo, hi = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
    bins = np.geomspace(lo, max(hi, lo * 1.01), 60)
    for run, e in zip(runs, energies, strict=True):
        ax.hist(e[e > 0], bins=bins.tolist(), histtype="step", lw=1.2, label=f"{run.label} (mean {e.mean():.1f} J)")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Draw (again) the plots of finished runs from their output folders."""
    p = argparse.ArgumentParser(prog="python -m sim.plots", description=main.__doc__)
    p.add_argument("folders", nargs="+", type=Path, help="output folders of `python -m sim` runs")
    args = p.parse_args(argv)
    failed = 0
    for folder in args.folders:
        missing = [f for f in ("summary.json", TIMELINES_FILE, RECORDS_FILES[0]) if not (folder / f).exists()]
        if missing:
            print(f"{folder}: no {missing[0]}; not the folder of a finished run (older runs wrote no {TIMELINES_FILE})")
            failed += 1
            continue
        try:
            print(f"{folder}: wrote {', '.join(plot_folder(folder))}")
        except (OSError, ValueError, KeyError, ConfigError) as e:
            print(f"{folder}: plots not drawn: {e}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

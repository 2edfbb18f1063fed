"""Plots of a run, policy against baseline: power over time (and its difference), CDFs of latency
(with the SLO) and per-request energy, batch size and KV-cache use over time; and from
`sim.plots.load`: queue length and throughput over time, per-replica power and batch of a fleet,
the capacity search; and from `sim.plots.energy`, for a run whose prefills found prompt tokens in
the prefix cache, its energy and the prefill the cache spared. A Perfetto trace of one replica's
steps: `sim.results.perfetto`.

The plots are drawn from the run's folder alone (`plot_folder`): its summary.json, its
resolved_config.yaml (the SLO), its records' plotted columns and the binned timelines the run
wrote (`sim.results.timelines`). So the figures can be drawn by another process after the run (the
background finisher of `python -m sim`) or again later:

    python -m sim.plots outputs/2026-01-01/12-00-00.123456

CDFs draw at most `CDF_POINTS` points per line. The policy's line is drawn over the baseline's
(`sim.plots.figure.line_style`).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from sim.config import SloConfig
from sim.planning.uncertainty import BANDS_FILE
from sim.plots.bands import BANDS_PLOT, plot_bands
from sim.plots.energy import ENERGY_PLOT, cache_hits, plot_energy_breakdown
from sim.plots.figure import PlotRun, figure, line_style, log_ticks, save
from sim.plots.load import (
    CAPACITY_PLOT,
    CLOCK_PLOT,
    LOAD_PLOT,
    REPLICAS_PLOT,
    clock_moves,
    plot_capacity,
    plot_clock,
    plot_load,
    plot_replicas,
)
from sim.results.records import RECORDS_FILES
from sim.results.timelines import REPLICAS_FILE, TIMELINES_FILE
from sim.schema import ConfigError, build

CDF_POINTS = 1000
"""Most points drawn per CDF line: the ranks are evenly spaced, the first and last always kept."""
PLOTTED = ["completed", "ttft_s", "tpot_s", "e2e_s", "energy_j"]  # the per-request columns the plots read
PLOT_FILES = ("power.png", "energy_per_request.png", "cdf.png", "batch.png")


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
    slo = _slo(folder)
    paths = [
        plot_power(runs, folder / PLOT_FILES[0], "one GPU" if replicas == 1 else f"sum of {replicas} GPUs"),
        plot_energy(runs, folder / PLOT_FILES[1]),
        plot_cdfs(runs, folder / PLOT_FILES[2], slo),
        plot_batch(runs, folder / PLOT_FILES[3]),
    ]
    if {"queued", "tokens_per_s"} <= set(lines.columns):  # runs before these columns: no load.png
        paths.append(plot_load(runs, folder / LOAD_PLOT))
    if clock_moves(runs):
        paths.append(plot_clock(runs, folder / CLOCK_PLOT))
    if (folder / REPLICAS_FILE).exists():
        paths.append(plot_replicas(pd.read_parquet(folder / REPLICAS_FILE), folder / REPLICAS_PLOT))
    if cache_hits(summary):
        paths.append(plot_energy_breakdown(summary, folder / ENERGY_PLOT))
    if summary.get("capacity") is not None:
        paths.append(plot_capacity(summary["capacity"], slo, folder / CAPACITY_PLOT))
    if summary.get("bands") and (folder / BANDS_FILE).exists():
        paths.append(plot_bands(summary, pd.read_csv(folder / BANDS_FILE), folder / BANDS_PLOT))
    return [p.name for p in paths]


def _slo(folder: Path) -> SloConfig:
    """The run's SLO, from its resolved_config.yaml."""
    raw = yaml.safe_load((folder / "resolved_config.yaml").read_text()) or {}
    return build(SloConfig, raw.get("slo"), "slo")


def cdf_points(values: np.ndarray, points: int = CDF_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(values, share ≤ value) of the empirical CDF at up to `points` evenly spaced ranks, the
    smallest and largest included."""
    v = np.sort(values)
    keep = np.unique(np.linspace(0, v.size - 1, min(points, v.size)).round().astype(np.int64))
    return v[keep], (keep + 1) / v.size


def plot_power(runs: Sequence[PlotRun], path: Path, gpus: str = "one GPU") -> Path:
    """Power (W, idle included; `gpus` says one GPU or the fleet's sum) over simulated time, one
    line per run, and below it the policy's power minus the baseline's."""
    fig = figure(9, 5 if len(runs) > 1 else 3.5, hspace=0.12)
    axes = fig.subplots(2 if len(runs) > 1 else 1, 1, sharex=True, squeeze=False)
    for k, run in enumerate(runs):
        axes[0, 0].plot(run.timelines["t_s"] / 60.0, run.timelines["power_w"], label=run.label, **line_style(k))
    axes[0, 0].set_ylabel("power (W)")
    axes[0, 0].set_title(f"GPU power over time ({gpus})")
    axes[0, 0].legend(loc="lower right")
    if len(runs) > 1:
        own, base = runs[0].timelines, runs[-1].timelines
        axes[1, 0].plot(own["t_s"] / 60.0, own["power_w"].to_numpy() - base["power_w"].to_numpy(), lw=0.9,
                        color="C2")  # fmt: skip
        axes[1, 0].axhline(0.0, color="k", lw=0.6)
        axes[1, 0].set_ylabel(f"{runs[0].label} − baseline (W)")
    axes[-1, 0].set_xlabel("simulated time (min)")
    return save(fig, path)


CDFS = (("ttft_s", "TTFT (s)"), ("tpot_s", "TPOT (s)"), ("e2e_s", "end-to-end latency (s)"),
        ("energy_j", "energy per request (J)"))  # fmt: skip


def plot_cdfs(runs: Sequence[PlotRun], path: Path, slo: SloConfig | None = None) -> Path:
    """CDFs over completed requests of TTFT, TPOT, end-to-end latency and energy, one line per run;
    the SLO's TTFT and TPOT targets as dashed vertical lines."""
    fig = figure(10, 6.5, top_in=0.15, hspace=0.35)
    axes = fig.subplots(2, 2)
    targets = {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s} if slo else {}
    for ax, (col, label) in zip(axes.flat, CDFS, strict=True):
        drawn = [_cdf(ax, run, col, k) for k, run in enumerate(runs)]
        if col in targets:
            ax.axvline(targets[col], color="C3", ls="--", lw=1.0, label=f"SLO {targets[col]:g} s")
            drawn.append(np.array([targets[col]]))
        values = np.concatenate([np.empty(0), *drawn])
        if values.size:
            log_ticks(ax, float(values.min()), float(values.max()))
        ax.set(xlabel=label, ylabel="share of requests ≤ x")
        ax.grid(alpha=0.3)
        if col in targets:
            ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def _cdf(ax, run: PlotRun, col: str, index: int) -> np.ndarray:
    """Draw run `index`'s CDF of `col` over its completed requests; the values drawn."""
    r = run.records
    v = r.loc[r["completed"], col].to_numpy(dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size:
        ax.step(*cdf_points(v), where="post", label=run.label, **line_style(index))
    return v


def plot_batch(runs: Sequence[PlotRun], path: Path) -> Path:
    """Running sequences per step (batch size) and KV-cache use (%) over simulated time, mean over
    GPUs, one line per run."""
    fig = figure(9, 5.5, left_in=1.0, hspace=0.12)
    ax, kv = fig.subplots(2, 1, sharex=True)
    for k, run in enumerate(runs):
        t = run.timelines["t_s"] / 60.0
        ax.plot(t, run.timelines["running"], label=run.label, **line_style(k))
        kv.plot(t, 100.0 * run.timelines["kv_used"], label=run.label, **line_style(k))
    ax.set(ylabel="sequences per step\n(mean per GPU)", title="Batch size and KV-cache use over time")
    kv.set(xlabel="simulated time (min)", ylabel="KV cache held (%)\n(mean per GPU)")
    ax.legend()
    return save(fig, path)


def plot_energy(runs: Sequence[PlotRun], path: Path) -> Path:
    """Distribution of per-request energy (J, log bins), one histogram per run."""
    fig = figure(7, 3.5, top_in=0.15)
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
    return save(fig, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Draw (again) the plots of finished runs from their output folders, or (--perfetto) write a
    Perfetto trace of one replica of one run."""
    p = argparse.ArgumentParser(prog="python -m sim.plots", description=main.__doc__)
    p.add_argument("folders", nargs="+", type=Path, help="output folders of `python -m sim` runs")
    p.add_argument("--perfetto", type=Path, help="write a Chrome/Perfetto trace (JSON) here instead of plots")
    p.add_argument("--replica", type=int, default=0, help="the replica traced (its index in the fleet; default 0)")
    p.add_argument("--window", default="0:", help="START:END simulated seconds traced (default 0: the whole run)")
    args = p.parse_args(argv)
    if args.perfetto is not None:
        return _perfetto(p, args)
    failed = 0
    for folder in args.folders:
        if _missing(folder):
            failed += 1
            continue
        try:
            print(f"{folder}: wrote {', '.join(plot_folder(folder))}")
        except (OSError, ValueError, KeyError, ConfigError) as e:
            print(f"{folder}: plots not drawn: {e}")
            failed += 1
    return 1 if failed else 0


def _missing(folder: Path) -> bool:
    """Whether `folder` lacks a finished run's files (said in one line)."""
    missing = [f for f in ("summary.json", TIMELINES_FILE, RECORDS_FILES[0]) if not (folder / f).exists()]
    if missing:
        print(f"{folder}: no {missing[0]}; not the folder of a finished run (older runs wrote no {TIMELINES_FILE})")
    return bool(missing)


def _perfetto(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """--perfetto: the trace of one replica of one run's folder over the window."""
    from sim.results.perfetto import parse_window, write_trace

    if len(args.folders) != 1:
        p.error("--perfetto traces one run: give one folder")
    try:
        window = parse_window(args.window)
    except ValueError as e:
        p.error(str(e))
    folder = args.folders[0]
    if _missing(folder):
        return 1
    try:
        n = write_trace(folder, args.perfetto, args.replica, window)
    except (OSError, ValueError, KeyError) as e:
        print(f"{folder}: trace not written: {e}")
        return 1
    print(f"{folder}: wrote {args.perfetto} ({n:,} requests of replica {args.replica}); open it in ui.perfetto.dev")
    return 0

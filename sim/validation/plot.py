"""Simulated against measured benchmark metrics, one panel per GPU and metric (parity plots)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.validation.table import METRICS

LABELS = {
    "batch": "average batch (sequences)",
    "throughput": "output throughput (tokens/s)",
    "energy_per_token": "energy per output token (J)",
    "power": "average power, all GPUs (W)",
    "itl_median": "median ITL (ms)",
}

MARKERS = {"dense": "o", "moe": "^", "hybrid": "s"}  # by model kind
GPU_COUNTS = (1, 2, 4, 8)  # GPUs per replica, each its own colour
BAND = 0.25  # shaded: within ±25 % of the measurement


def plot_validation(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the figure to `path`: a row of panels per GPU, one panel per metric, each row of `df`
    a point at (measured, simulated) on log axes, coloured by GPUs per replica, shaped by model
    kind (circle dense, triangle MoE), with the y = x line, a ±25 % band and the panel's mean
    absolute error in its title. Legible with hundreds of rows (points, not lines per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    gpus = sorted(df["gpu_model"].unique())
    counts = df["num_gpus"] if "num_gpus" in df.columns else pd.Series(1, index=df.index)
    kinds = df["kind"] if "kind" in df.columns else pd.Series("dense", index=df.index)
    known = sorted(set(GPU_COUNTS) | {int(n) for n in counts.unique()})
    cmap = plt.get_cmap("tab10")
    colors = {n: cmap(i % 10) for i, n in enumerate(known)}
    fig, axes = plt.subplots(len(gpus), len(METRICS), figsize=(4.0 * len(METRICS), 3.9 * len(gpus)), squeeze=False)
    for r, gpu in enumerate(gpus):
        on = (df["gpu_model"] == gpu).to_numpy()
        for c, metric in enumerate(METRICS):
            ax = axes[r][c]
            meas = df[f"{metric}_measured"].to_numpy(float)[on]
            sim = df[f"{metric}_simulated"].to_numpy(float)[on]
            ok = np.isfinite(meas) & np.isfinite(sim) & (meas > 0) & (sim > 0)
            for n in known:
                for kind, marker in MARKERS.items():
                    sel = ok & (counts.to_numpy()[on] == n) & (kinds.to_numpy()[on] == kind)
                    if sel.any():
                        ax.scatter(meas[sel], sim[sel], s=18, marker=marker, color=colors[n], alpha=0.75, lw=0)
            if ok.any():
                lo, hi = min(meas[ok].min(), sim[ok].min()) / 1.3, max(meas[ok].max(), sim[ok].max()) * 1.3
                line = np.geomspace(lo, hi, 50)
                ax.plot(line, line, "k-", lw=0.8)
                ax.fill_between(line, line * (1 - BAND), line * (1 + BAND), color="0.85", zorder=0)
                ax.set_xlim(lo, hi)
                ax.set_ylim(lo, hi)
                ax.set_xscale("log")
                ax.set_yscale("log")
                for axis in (ax.xaxis, ax.yaxis):
                    axis.set_minor_formatter(NullFormatter())  # a span under a decade labels its minor ticks
            mae = float(np.mean(np.abs(df[f"{metric}_err_pct"].to_numpy(float)[on][ok]))) if ok.any() else np.nan
            ax.set_title(f"{gpu}: {LABELS[metric]}\nMAE {mae:.1f} % over {int(ok.sum())} rows", fontsize=9)
            ax.set_xlabel("measured", fontsize=8)
            ax.set_ylabel("simulated", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(True, which="major", alpha=0.3)
    handles: list[Any] = [
        Line2D([], [], ls="", marker="o", color=colors[n], label=f"{n} GPU{'s' if n > 1 else ''} per replica")
        for n in known
        if (counts == n).any()
    ]
    handles += [
        Line2D([], [], ls="", marker=m, color="0.3", label=k if k != "moe" else "MoE")
        for k, m in MARKERS.items()
        if (kinds == k).any()
    ]
    handles.append(Line2D([], [], color="0.85", lw=6, label=f"within ±{BAND:.0%}"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle("ML.ENERGY benchmark replayed by the simulator: simulated against measured, one point per run")
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

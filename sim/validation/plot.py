"""Measured against simulated benchmark metrics over the batch cap, one panel per metric and GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sim.validation.table import METRICS

LABELS = {
    "batch": "average batch (sequences)",
    "throughput": "output throughput (tokens/s)",
    "energy_per_token": "energy per output token (J)",
    "power": "average power (W)",
    "itl_median": "median ITL (ms)",
}

LOG_Y = ("batch", "energy_per_token")  # span orders of magnitude over the caps


def plot_validation(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the figure to `path`: rows of panels per GPU, one panel per metric; per model a solid
    line (measured, circles) and a dashed one (simulated, crosses) over max_num_seqs (log x; log y
    for batch and energy per token)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gpus = sorted(df["gpu_model"].unique())
    models = sorted(df["model_id"].unique())
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(models)}
    fig, axes = plt.subplots(len(gpus), len(METRICS), figsize=(4.2 * len(METRICS), 3.6 * len(gpus)), squeeze=False)
    for r, gpu in enumerate(gpus):
        for c, metric in enumerate(METRICS):
            ax = axes[r][c]
            for model in models:
                d = df[(df["gpu_model"] == gpu) & (df["model_id"] == model)].sort_values("max_num_seqs")
                if d.empty:
                    continue
                name = model.split("/")[-1]
                x = d["max_num_seqs"]
                ax.plot(x, d[f"{metric}_measured"], "o-", color=colors[model], label=f"{name} measured")
                ax.plot(x, d[f"{metric}_simulated"], "x--", color=colors[model], label=f"{name} simulated")
            ax.set_xscale("log", base=2)
            if metric in LOG_Y:
                ax.set_yscale("log")
            ax.set_title(f"{gpu}: {LABELS[metric]}", fontsize=10)
            ax.set_xlabel("max_num_seqs")
            ax.grid(True, which="both", alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 6), fontsize=9)
    fig.suptitle("ML.ENERGY benchmark replayed by the simulator: measured (solid) vs simulated (dashed)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

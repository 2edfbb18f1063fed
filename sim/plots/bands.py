"""The bands of a run (bands.png, drawn when the run has them): one panel per banded figure, each
replay's value as a dot (jittered up and down so equal values stay visible), the band shaded, the
replays' median dashed and the point estimate (the run on the trace and oracle as given) as a
solid line; a saving's panel marks zero, and its title says whether the band excludes it. Drawn
from summary.json and bands.csv, so `python -m sim.plots` draws it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.plots.figure import figure, save
from sim.results.summary import BANDED, SIGNIFICANT, lookup, unit

BANDS_PLOT = "bands.png"
LABELS = {
    "energy_j": ("energy", 1e-3, "kJ"),
    "energy_per_output_token_j": ("energy per output token", 1.0, "J"),
    "output_tokens_per_j": ("output tokens per J", 1.0, "tokens/J"),
    "ttft_p99_s": ("p99 TTFT", 1.0, "s"),
    "tpot_p99_s": ("p99 TPOT", 1.0, "s"),
    "slo_attainment": ("SLO attainment", 1.0, "share"),
    "energy_savings_pct": ("energy saved", 1.0, "%"),
    "capacity_replicas": ("capacity", 1.0, "replicas"),
    "capacity_gpus": ("capacity", 1.0, "GPUs"),
}
"""Band name → (title, scale, unit shown) of its panel."""
COLUMNS = 3


def plot_bands(summary: Mapping[str, Any], samples: pd.DataFrame, path: Path) -> Path:
    """The panels of the `bands` of a summary.json, from the replays' figures (bands.csv)."""
    bands = summary["bands"]
    names = [n for n in BANDED if n in bands and n in samples.columns]
    if "capacity_gpus" in names and samples["capacity_gpus"].equals(samples["capacity_replicas"]):
        names.remove("capacity_gpus")  # one GPU a replica: the same panel twice
    rows = -(-len(names) // COLUMNS)
    fig = figure(3.2 * COLUMNS, 1.9 * rows + 0.6, left_in=0.3, right_in=0.3, top_in=0.75, hspace=1.0, wspace=0.12)
    axes = np.atleast_1d(fig.subplots(rows, COLUMNS)).ravel()
    rng = np.random.default_rng(0)  # the dots' jitter only
    for ax, name in zip(axes, names, strict=False):
        title, scale, shown = LABELS[name]
        values = samples[name].to_numpy(dtype=float) * scale
        band = bands[name]
        ax.axvspan(band["low"] * scale, band["high"] * scale, color="C0", alpha=0.15, lw=0)
        ax.scatter(values, rng.uniform(-0.3, 0.3, values.size), s=10, color="C0", alpha=0.7, zorder=3)
        ax.axvline(band["median"] * scale, color="C0", ls="--", lw=1)
        point = lookup(summary, BANDED[name])
        if np.isfinite(point):
            ax.axvline(point * scale, color="k", lw=1.5, zorder=4)
        if name in SIGNIFICANT:
            ax.axvline(0.0, color="C3", lw=1, ls=":")
            title += " (significant)" if band.get("significant") else " (not significant)"
        ax.set_yticks([])
        ax.set_ylim(-0.6, 0.6)
        ax.set_xlabel(shown if shown != "share" else unit(BANDED[name]), fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    level, n = 100 * float(bands["level"]), int(bands["samples"])
    fig.suptitle(
        f"{level:g} % bands over {n} replays ({bands['sources']}): shaded; dots: replays; dashed: their median; "
        "solid: the run as given",
        fontsize=9,
    )
    return save(fig, path)

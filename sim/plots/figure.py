"""What every run plot shares: a figure on the Agg canvas with fixed margins, saved at `DPI`, and
log-scale ticks that do not collide.

Figures are drawn straight on the Agg canvas (`matplotlib.figure.Figure`, no pyplot and its
global figure list) with fixed margins: laying a figure out (`tight_layout`) draws it once more,
and that was a third of the plotting time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DPI = 120
BASELINE_STYLE = {"color": "0.55", "lw": 1.6, "alpha": 0.6, "zorder": 1}
"""The baseline's line: grey, wide, half transparent and below the policy's (drawn on top)."""
POLICY_ZORDER = 3


@dataclass(frozen=True)
class PlotRun:
    """What the plots draw of one run: its legend label, its records' plotted columns and its
    timelines (see `sim.results.timelines.timelines`)."""

    label: str
    records: pd.DataFrame
    timelines: pd.DataFrame


def figure(
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


def save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def line_style(index: int) -> dict[str, object]:
    """Keyword arguments of run `index`'s line: the policy's (0) on top, a baseline (last) under it."""
    return dict(BASELINE_STYLE) if index > 0 else {"color": "C0", "lw": 0.9, "zorder": POLICY_ZORDER}


def log_ticks(ax: Axes, lo: float, hi: float) -> None:
    """A log x axis over [lo, hi] labelled at 1, 2 and 5 × 10^k when it spans under two decades
    (else at the decades), as plain numbers, no minor labels: matplotlib's default labels the
    minor ticks of a narrow range in scientific notation, and they collide."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = np.log10(hi / lo) if hi > lo > 0 else 0.0
    subs = (1.0, 2.0, 5.0) if decades < 2 else (1.0,)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())

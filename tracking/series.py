"""A run's time series as MLflow step metrics, which the UI charts against step or time.

The series come from a Parquet file in the run's folder (sim's timelines.parquet): a column t_s
(s since the run's simulated start, the bin centre), a column `run` (0: the run, 1: its
baseline) and one numeric column per series (power_w, running, ...). Each becomes the metric
`timeline.<column>` (`baseline.timeline.<column>` for the baseline), one point per time bin:
step = the bin's index, timestamp = the run's start + t_s, so MLflow's "relative time" axis
reads simulated seconds. At most `MAX_POINTS` points per series (every k-th bin beyond).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

MAX_POINTS = 1000
Point = tuple[str, float, int, int]
"""(metric name, value, timestamp in ms since the epoch, step)."""


def step_points(path: Path, start_ms: int, max_points: int = MAX_POINTS) -> list[Point]:
    """The points of every series in the Parquet file at `path` (see the module docstring)."""
    frame = pd.read_parquet(path)
    if "run" not in frame.columns:
        frame = frame.assign(run=0)
    columns = [c for c in frame.columns if c not in ("t_s", "run") and pd.api.types.is_numeric_dtype(frame[c])]
    points: list[Point] = []
    for run, rows in frame.groupby("run", sort=True):
        prefix = "timeline." if run == 0 else "baseline.timeline."
        stride = max(1, math.ceil(len(rows) / max_points))
        kept = rows.reset_index(drop=True).iloc[::stride]
        stamps = [start_ms + round(1000 * t) for t in kept["t_s"]]
        for column in columns:
            for step, stamp, value in zip(kept.index, stamps, kept[column], strict=True):
                if math.isfinite(value):
                    points.append((f"{prefix}{column}", float(value), stamp, int(step)))
    return points

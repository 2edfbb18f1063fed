"""Summary statistics of a trace, in the layout of Tables 1-2 of Fernandez et al. (2025)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class LengthStats:
    """Token-length statistics (tokens); `std` is the sample standard deviation (ddof=1)."""

    mean: float
    std: float
    median: float
    p99: float
    max: int


@dataclass(frozen=True)
class TraceStats:
    """Request count, time span (s), mean and peak-minute arrival rates (requests/s), lengths."""

    requests: int
    span_s: float
    mean_rate_per_s: float
    peak_minute_rate_per_s: float
    n_in: LengthStats
    n_out: LengthStats


def length_stats(values: np.ndarray) -> LengthStats:
    """Mean ± std, median, p99 (linear interpolation) and max of a length column."""
    x = np.asarray(values, dtype=np.float64)
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return LengthStats(float(x.mean()), std, float(np.median(x)), float(np.percentile(x, 99)), int(x.max()))


def trace_stats(frame: pd.DataFrame) -> TraceStats:
    """Statistics of a loaded trace; mean rate is requests / span, peak over 60-s bins."""
    t = frame["arrival_s"].to_numpy()
    span = float(t[-1] - t[0])
    per_minute = np.bincount(((t - t[0]) // 60.0).astype(np.int64))
    return TraceStats(
        len(frame),
        span,
        len(frame) / span if span > 0 else float("nan"),
        float(per_minute.max()) / 60.0,
        length_stats(frame["n_in"].to_numpy()),
        length_stats(frame["n_out"].to_numpy()),
    )


def format_stats(name: str, s: TraceStats) -> str:
    """A small text table of `s`."""
    rows = [
        f"{name}: {s.requests:,} requests over {s.span_s:,.0f} s "
        f"({s.span_s / 3600:.2f} h); mean {s.mean_rate_per_s:.2f} req/s, "
        f"peak minute {s.peak_minute_rate_per_s:.2f} req/s",
        f"{'tokens':<8}{'mean ± std':>22}{'median':>10}{'p99':>10}{'max':>10}",
    ]
    for label, ls in (("input", s.n_in), ("output", s.n_out)):
        rows.append(f"{label:<8}{f'{ls.mean:.2f} ± {ls.std:.2f}':>22}{ls.median:>10.0f}{ls.p99:>10.0f}{ls.max:>10,}")
    return "\n".join(rows)

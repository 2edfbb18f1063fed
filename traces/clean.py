"""Make a parsed trace well-formed: drop zero-token rows, sort, rebase; report every change."""

from __future__ import annotations

import numpy as np
import pandas as pd


def drop_zero_tokens(frame: pd.DataFrame, keep_zero_out: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Drop rows with n_in == 0, and n_out == 0 (failed requests) unless `keep_zero_out`."""
    notes = []
    zero_in = frame["n_in"].to_numpy() == 0
    zero_out = frame["n_out"].to_numpy() == 0
    if zero_in.any():
        notes.append(f"dropped {int(zero_in.sum()):,} rows with 0 input tokens")
    if zero_out.any():
        if keep_zero_out:
            notes.append(f"kept {int(zero_out.sum()):,} failed requests (0 output tokens)")
        else:
            notes.append(f"dropped {int((zero_out & ~zero_in).sum()):,} failed requests (0 output tokens)")
    drop = zero_in | (zero_out & (not keep_zero_out))
    return (frame.loc[~drop] if drop.any() else frame), notes


def sort_and_rebase(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Sort by arrival (stable), count ties, and shift so the first arrival is 0.0 s."""
    notes = []
    t = frame["arrival_s"].to_numpy()
    steps = np.diff(t)
    if (steps < 0).any():
        notes.append(f"sorted {int((steps < 0).sum()):,} out-of-order timestamps")
        frame = frame.iloc[np.argsort(t, kind="stable")]
        t = frame["arrival_s"].to_numpy()
        steps = np.diff(t)
    ties = int((steps == 0).sum())
    if ties:
        notes.append(f"kept {ties:,} requests with the same timestamp as the one before")
    frame = frame.reset_index(drop=True)
    if len(frame) and t[0] != 0.0:
        frame["arrival_s"] = t - t[0]
    return frame, notes


LONG_GAP_S = 3600.0
"""Arrival gaps longer than this (s) count as idle stretches in `idle_gap_warning`."""


def idle_gap_warning(frame: pd.DataFrame, max_idle_share: float = 0.5) -> str | None:
    """A warning when gaps longer than LONG_GAP_S make up more than `max_idle_share` of the span.

    Such a trace is mostly idle time: the simulator charges idle power over every gap, so the
    idle energy swamps the serving energy (a 10¹² s gap is 7·10¹³ J at 75 W). The message says
    how long the gaps are, where the longest one is, and how to fix the trace.
    """
    t = frame["arrival_s"].to_numpy(dtype=float)
    if t.size < 2:
        return None
    gaps = np.diff(t)
    span = float(t[-1] - t[0])
    long = gaps > LONG_GAP_S
    idle = float(gaps[long].sum())
    if span <= 0 or idle <= max_idle_share * span:
        return None
    k = int(np.argmax(gaps))
    return (
        f"{int(long.sum()):,} arrival gap(s) longer than {LONG_GAP_S:,.0f} s make up {100 * idle / span:.0f} % "
        f"of the trace's {_duration(span)}; the longest, {_duration(float(gaps[k]))}, lies between requests "
        f"{k:,} and {k + 1:,} (arrival_s {t[k]:,.3f} and {t[k + 1]:,.3f}). The simulation would charge idle "
        "power over all of it. Check the timestamps' unit, or keep a busy window (start_s, duration_s) "
        "and set the load with rate_scale"
    )


def _duration(seconds: float) -> str:
    if seconds < 2 * 86400:
        return f"{seconds:,.0f} s"
    days = seconds / 86400
    return f"{seconds:,.3g} s ({days:,.0f} days)" if days < 1e5 else f"{seconds:,.3g} s ({days / 365.25:,.3g} years)"

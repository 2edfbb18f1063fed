"""Make a parsed trace well-formed: drop zero-token rows, sort, rebase; report every change."""

from __future__ import annotations

import numpy as np
import pandas as pd


def drop_zero_tokens(frame: pd.DataFrame, keep_zero_out: bool = False
                     ) -> tuple[pd.DataFrame, list[str]]:
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
            notes.append(f"dropped {int((zero_out & ~zero_in).sum()):,} failed requests "
                         f"(0 output tokens)")
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

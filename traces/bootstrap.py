"""Local block bootstrap of a trace: another trace that the same traffic could have produced.

The trace's span of arrival times is cut into `windows` equal windows; each position in turn takes
a window drawn (with replacement) from those within `reach` windows of it, laid end to end, each
keeping its requests' arrival times within it. Bursts and lulls shorter than a window survive (a
request-by-request bootstrap would smooth them away), and so does the traffic's slower profile: a
peak stays about where it was, as long as it was. Drawing from anywhere in the trace (the plain
block bootstrap, `reach` ≥ `windows`) would scatter a peak's windows among quiet ones, and a fleet
sized for the real peak would look oversized in nearly every draw (on azure_chat at 20× its rate,
6 replicas miss the p99 TTFT target on the trace but met it in every plain draw). This is the local
block bootstrap of Paparoditis and Politis (2002, "Local block bootstrap", C. R. Acad. Sci. Paris
335), made for series whose level drifts. A trace
whose requests all arrive at once (a closed loop's, whose arrivals the simulator makes) is cut
into windows of consecutive requests instead. A window drawn twice would send the same prompts
twice: its prefix blocks and conversations that no other window shares are renamed in every copy
after the first, so only prefixes the traffic really shares are found cached.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

RENAMED = ("hash_ids", "conversation")
"""Columns whose values a window's copy renames where no other window shares them."""


def resample_windows(requests: pd.DataFrame, windows: int, rng: np.random.Generator, reach: int = 1) -> pd.DataFrame:
    """A local block bootstrap of `requests` (a trace frame, `arrival_s` sorted) in `windows`
    windows, each position drawing from the windows within `reach` of it, with `rng` (a draw of
    only empty windows is drawn again); the same columns and attrs, index 0..n-1, arrivals sorted."""
    if windows < 1:
        raise ValueError(f"windows must be ≥ 1, got {windows}")
    if reach < 1:
        raise ValueError(f"reach must be ≥ 1 (windows either side a position draws from), got {reach}")
    n = len(requests)
    if n == 0:
        raise ValueError("cannot resample an empty trace")
    arrival = requests["arrival_s"].to_numpy(dtype=float)
    span = float(arrival[-1] - arrival[0])
    if span > 0:
        width = span / windows
        window = np.minimum(((arrival - arrival[0]) / width).astype(np.int64), windows - 1)
        start = arrival[0] + width * np.arange(windows)
    else:
        width = 0.0
        window = np.minimum(np.arange(n) * windows // n, windows - 1)
        start = np.full(windows, arrival[0])
    counts = np.bincount(window, minlength=windows)
    position = np.arange(windows)
    lo, hi = np.maximum(position - reach, 0), np.minimum(position + reach, windows - 1)
    drawn = lo + rng.integers(0, hi - lo + 1)
    while not counts[drawn].any():  # only empty windows: no trace to serve, so draw again
        drawn = lo + rng.integers(0, hi - lo + 1)
    rows, offsets, copies = [], [], []
    seen: dict[int, int] = {}
    for k, w in enumerate(drawn.tolist()):
        idx = np.flatnonzero(window == w)
        rows.append(idx)
        offsets.append(np.full(len(idx), arrival[0] + k * width - start[w]))
        copies.append(np.full(len(idx), seen.get(w, 0)))
        seen[w] = seen.get(w, 0) + 1
    take, copy = np.concatenate(rows), np.concatenate(copies)
    out = requests.iloc[take].reset_index(drop=True)
    out["arrival_s"] = arrival[take] + np.concatenate(offsets)
    for column in RENAMED:
        if column in out.columns:
            out[column] = _renamed(requests[column], window, take, copy)
    order = np.argsort(out["arrival_s"].to_numpy(), kind="stable")
    out = out.iloc[order].reset_index(drop=True)
    out.attrs = dict(requests.attrs)
    return out


def _renamed(column: pd.Series, window: np.ndarray, take: np.ndarray, copy: np.ndarray) -> pd.Series:
    """`column` (integer ids, or lists of them) of the rows `take`, each id found in one window
    only shifted past every id by its row's `copy` number (0: unchanged)."""
    is_list = not pd.api.types.is_integer_dtype(column.dtype)
    if is_list:
        lists = pa.array(column.array)  # Arrow list columns and lists in object columns alike
        lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
        ids = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.int64)
        parent = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    else:
        ids = column.to_numpy(dtype=np.int64)
        parent = np.arange(len(column))
    if ids.size == 0:
        return column.iloc[take].reset_index(drop=True)
    unique, inverse = np.unique(ids, return_inverse=True)
    lo = np.full(len(unique), np.iinfo(np.int64).max)
    hi = np.full(len(unique), -1)
    np.minimum.at(lo, inverse, window[parent])
    np.maximum.at(hi, inverse, window[parent])
    private = (lo == hi)[inverse]
    step = int(unique[-1]) + 1
    if not is_list:
        shifted = ids[take] + np.where(private[take], copy * step, 0)
        return pd.Series(shifted, dtype=column.dtype)
    starts = np.concatenate([[0], np.cumsum(pc.list_value_length(lists).fill_null(0).to_numpy())])
    out = []
    for r, c in zip(take.tolist(), copy.tolist(), strict=True):
        a, b = starts[r], starts[r + 1]
        v = ids[a:b]
        out.append((v + np.where(private[a:b], c * step, 0)).tolist() if c else v.tolist())
    return pd.Series(out, dtype=column.dtype)

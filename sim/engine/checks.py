"""The requests a simulation is given, checked as the trace loader checks a file's.

`simulate`, `simulate_fleet` and `simulate_windows` take a DataFrame from anywhere (the Python
API): `checked_arrays` holds it to the rules of `traces.checks`, so a NaN or infinite arrival or a
fractional token count is one clear ValueError, not a wrong total or an error deep in the engine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from traces.checks import bad_seconds, bad_tokens


def checked_arrays(requests: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """arrival_s (s), n_in, n_out (tokens) of `requests`, under the trace loader's rules
    (`traces.checks`): finite arrivals, sorted and ≥ 0; whole token counts ≥ 1 (the loader drops
    empty prompts, and failed requests, 0 output tokens, unless `trace.keep_failed`).
    ValueError naming the first bad request (its 0-based position, the records' request_id)."""
    missing = {"arrival_s", "n_in", "n_out"} - set(requests.columns)
    if missing:
        raise ValueError(f"requests lack column(s) {sorted(missing)}")
    arrival = np.ascontiguousarray(_numbers(requests, "arrival_s"), dtype=float)
    _check(arrival, "arrival_s", bad_seconds(arrival))
    _check(arrival, "arrival_s", _first(arrival < 0, "is negative (arrivals are s from the start, ≥ 0)"))
    late = np.flatnonzero(np.diff(arrival) < 0)
    if late.size:
        i = int(late[0]) + 1
        earlier = f"is earlier than request {i - 1}'s {arrival[i - 1].item()!r}; sort the requests by arrival_s"
        _check(arrival, "arrival_s", (i, earlier))
    n_in, n_out = _lengths(requests, "n_in"), _lengths(requests, "n_out")
    _check(n_in, "n_in", _first(n_in == 0, "is an empty prompt (the trace loader drops such requests)"))
    failed = "is a failed request: nothing to serve (the trace loader drops these unless trace.keep_failed)"
    _check(n_out, "n_out", _first(n_out == 0, failed))
    return arrival, n_in, n_out


def _first(bad: np.ndarray, problem: str) -> tuple[int, str] | None:
    return (int(np.argmax(bad)), problem) if bad.any() else None


def _check(values: np.ndarray, column: str, bad: tuple[int, str] | None) -> None:
    """ValueError naming the bad request, its column and value, and the problem."""
    if bad is not None:
        i, problem = bad
        raise ValueError(f"requests: request {i}: {column} {values[i].item()!r} {problem}")


def _numbers(requests: pd.DataFrame, column: str) -> np.ndarray:
    """A column's values as a numeric array; ValueError when it holds something else (text, dates)."""
    values = requests[column].to_numpy()
    if not values.size:  # an empty trace: no values, whatever the column's dtype
        return values.astype(np.int64 if column != "arrival_s" else float)
    if values.dtype.kind not in "iuf":
        raise ValueError(f"requests: column {column} must hold numbers, got dtype {values.dtype}")
    return values


def _lengths(requests: pd.DataFrame, column: str) -> np.ndarray:
    """Token counts as a contiguous integer array (the trace's own when it is one: no copy), checked."""
    values = _numbers(requests, column)
    _check(values, column, bad_tokens(values))
    return np.ascontiguousarray(values if values.dtype.kind in "iu" else values.astype(np.int64))

"""The value rules every reader of requests applies: finite times, whole token counts in range.

Each check returns the position of the first bad value and what is wrong with it, so that the
caller names it in its own terms: a file's column and line (`traces.parse`), a DataFrame's
request (`sim.serving.run`).
"""

from __future__ import annotations

import numpy as np

INT32_MAX = int(np.iinfo(np.int32).max)
"""Largest token count a trace holds (int32 columns)."""


def not_whole(values: np.ndarray) -> np.ndarray:
    """Mask of the values (float) that are not finite whole numbers."""
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(values) | (np.mod(values, 1.0) != 0)


def bad_seconds(values: np.ndarray) -> tuple[int, str] | None:
    """The first time (s) that is NaN or infinite, with the problem; None when all are finite."""
    bad = ~np.isfinite(values)
    return (int(np.argmax(bad)), "is not a finite number of seconds") if bad.any() else None


def bad_tokens(values: np.ndarray) -> tuple[int, str] | None:
    """The first token count that is not a whole number in [0, INT32_MAX], with the problem."""
    if values.dtype.kind == "f":
        whole = not_whole(values)
        if whole.any():
            return int(np.argmax(whole)), "is not an integer token count"
    for bad, problem in (
        (values < 0, "is a negative token count"),
        (values > INT32_MAX, "is too large for a token count"),
    ):
        if bad.any():
            return int(np.argmax(bad)), problem
    return None

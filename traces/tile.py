"""A trace repeated end to end: a day of traffic from the shipped hour (benchmarks, README figures)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def tile(requests: pd.DataFrame, copies: int, period_s: float = 3600.0) -> pd.DataFrame:
    """`arrival_s`, `n_in` and `n_out` of `requests` repeated `copies` times, copy k shifted by
    k × `period_s` (s); ValueError when the trace is longer than the period (the copies would overlap)."""
    span = float(requests["arrival_s"].iloc[-1])
    if span >= period_s:
        raise ValueError(f"the trace spans {span:.0f} s, more than the {period_s:.0f} s period of its copies")
    shift = np.repeat(np.arange(copies) * period_s, len(requests))
    return pd.DataFrame(
        {
            "arrival_s": np.tile(requests["arrival_s"].to_numpy(float), copies) + shift,
            "n_in": np.tile(requests["n_in"].to_numpy(), copies),
            "n_out": np.tile(requests["n_out"].to_numpy(), copies),
        }
    )

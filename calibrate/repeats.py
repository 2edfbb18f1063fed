"""The spread of repeated measurements of each grid point (mean, std and CV of energy and time)."""

from __future__ import annotations

import pandas as pd

POINT_COLUMNS = ("model", "gpu", "backend", "n_in", "n_out", "batch_size", "num_requests", "clock_mhz", "power_limit_w")
MEASURED = ("energy_j", "duration_s")


def spread_by_point(df: pd.DataFrame) -> pd.DataFrame:
    """One row per point: `repeats`, and `<col>_mean`, `<col>_std`, `<col>_cv_pct` of each measure.

    The standard deviation is the sample one (NaN for a single repeat); energy stays NaN when the
    sweep was timing-only.
    """
    keys = [c for c in POINT_COLUMNS if c in df.columns]
    groups = df.groupby(keys, dropna=False, sort=False)
    out = groups.size().rename("repeats").to_frame()
    for col in MEASURED:
        mean, std = groups[col].mean(), groups[col].std(ddof=1)
        out[f"{col}_mean"], out[f"{col}_std"] = mean, std
        out[f"{col}_cv_pct"] = 100.0 * std / mean
    return out.reset_index()

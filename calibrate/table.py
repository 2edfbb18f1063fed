"""The measurement table: one row per measured run (schema in DESIGN.md §3).

`energy_j` is the GPU energy of the whole run (all `num_requests` requests), `duration_s` its wall
time, `batch_size` the batch cap. Reading validates every row and names the first bad one.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REQUIRED = (
    "model",
    "gpu",
    "backend",
    "n_in",
    "n_out",
    "batch_size",
    "num_requests",
    "energy_j",
    "duration_s",
)
OPTIONAL = (
    "idle_power_w",
    "ttft_s",
    "tpot_s",
    "clock_mhz",
    "power_limit_w",
    "timestamp",
)
INTEGER_COLUMNS = ("n_in", "n_out", "batch_size", "num_requests")
POSITIVE_COLUMNS = (*INTEGER_COLUMNS, "duration_s")


class MeasurementTableError(ValueError):
    """A measurement table that cannot be used; the message names the file, column and row."""


def read_table(path: str | Path, require_energy: bool = True) -> pd.DataFrame:
    """Read a CSV or Parquet measurement table and validate it (see `validate_table`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"measurement table {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    elif path.suffix.lower() in (".csv", ".gz"):
        df = pd.read_csv(path)
    else:
        raise MeasurementTableError(f"{path}: unknown table format {path.suffix!r} (use .csv or .parquet)")
    return validate_table(df, source=str(path), require_energy=require_energy)


def validate_table(df: pd.DataFrame, source: str = "<table>", require_energy: bool = True) -> pd.DataFrame:
    """Check columns and values; return a typed copy. Errors name the column and first bad row.

    Row numbers are 0-based data rows (a CSV's line number is row + 2).
    """
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise MeasurementTableError(f"{source}: missing required column(s) {missing}; required are {list(REQUIRED)}")
    if df.empty:
        raise MeasurementTableError(f"{source}: the table has no rows")
    out = df.copy()
    numeric = [*POSITIVE_COLUMNS, "energy_j"]
    for col in numeric:
        values = pd.to_numeric(out[col], errors="coerce")
        bad = values.isna() & out[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise MeasurementTableError(f"{source}: column {col!r} row {row} is not a number: {df[col].iloc[row]!r}")
        out[col] = values
    _check_positive(out, POSITIVE_COLUMNS, source)
    if require_energy:
        if out["energy_j"].isna().all():
            raise MeasurementTableError(
                f"{source}: column 'energy_j' is empty (a timing-only sweep, meter=none?); "
                "energy cannot be fitted from it: measure with meter=nvml"
            )
        _check_positive(out, ("energy_j",), source)
    for col in INTEGER_COLUMNS:
        frac = out[col] != np.round(out[col])
        if frac.any():
            row = int(np.flatnonzero(frac.to_numpy())[0])
            raise MeasurementTableError(f"{source}: column {col!r} row {row} is not an integer: {out[col].iloc[row]}")
        out[col] = out[col].astype(np.int64)
    return out.reset_index(drop=True)


def _check_positive(df: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    for col in columns:
        values = df[col].to_numpy(dtype=float)
        bad = ~np.isfinite(values) | (values <= 0)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            what = "missing (NaN)" if np.isnan(values[row]) else f"not positive ({values[row]})"
            raise MeasurementTableError(f"{source}: column {col!r} row {row} is {what}")


def append_row(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one measurement row to a CSV table at once (header written for a new file).

    Columns follow the file's existing header; a key the header lacks is an error, so a resumed
    sweep can never write misaligned rows.
    """
    path = Path(path)
    missing = [c for c in REQUIRED if c not in row]
    if missing:
        raise MeasurementTableError(f"row for {path} lacks required column(s) {missing}")
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as f:
            header = next(csv.reader(f))
        extra = [k for k in row if k not in header]
        if extra:
            raise MeasurementTableError(f"{path}: row has columns {extra} that the file's header lacks")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        header = [*REQUIRED, *[k for k in row if k not in REQUIRED]]
        with path.open("w", newline="") as f:
            csv.writer(f).writerow(header)
    with path.open("a", newline="") as f:
        csv.writer(f).writerow(["" if row.get(k) is None else row.get(k) for k in header])
        f.flush()

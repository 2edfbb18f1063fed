"""The measurement table: one row per measured run (columns in REQUIRED and OPTIONAL below).

`energy_j` is the GPU energy of the whole run (all `num_requests` requests), `duration_s` its wall
time, `batch_size` the batch cap. Reading validates every row and names the first bad one; lines
cut short while being written (a sweep killed mid-write) are set aside before a sweep resumes.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oracle.files import require_regular_file

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

log = logging.getLogger(__name__)


class MeasurementTableError(ValueError):
    """A measurement table that cannot be used; the message names the file, column and row."""


def read_table(path: str | Path, require_energy: bool = True) -> pd.DataFrame:
    """Read a CSV or Parquet measurement table and validate it (see `validate_table`)."""
    path = require_regular_file(path, "measurement table")
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


def rejected_path(path: Path) -> Path:
    """Where `set_aside_partial_lines` moves the lines it takes out of a table."""
    return path.with_name(path.stem + ".rejected" + path.suffix)


def set_aside_partial_lines(path: str | Path) -> list[int]:
    """Move lines of a CSV table that were cut short while being written to `rejected_path(path)`.

    A line is cut short when it lacks its line end (the last line of a killed sweep) or has a
    different number of fields than the header. Each is logged with file and line number; the
    table is rewritten atomically without them, so its points are measured again. Returns the
    1-based line numbers set aside.
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return []
    lines = path.read_bytes().splitlines(keepends=True)
    header = _fields(lines[0]) if lines[0].endswith((b"\n", b"\r")) else None
    keep: list[bytes] = [] if header is None else [lines[0]]
    bad: list[tuple[int, bytes, str]] = []
    if header is None:
        bad.append((1, lines[0], "the header line was cut short"))
    for number, line in enumerate(lines[1:], start=2):
        fields = _fields(line)
        if header is None:
            bad.append((number, line, "follows a cut-short header"))
        elif not line.endswith((b"\n", b"\r")):
            bad.append((number, line, "was cut short (no line end): a sweep stopped while writing it"))
        elif fields is None or (line.strip() and len(fields) != len(header)):
            n = "unreadable" if fields is None else f"{len(fields)}"
            bad.append((number, line, f"has {n} fields, the header has {len(header)}"))
        else:
            keep.append(line)
    if not bad:
        return []
    rejected = rejected_path(path)
    with rejected.open("ab") as f:
        f.writelines(line if line.endswith((b"\n", b"\r")) else line + b"\n" for _, line, _ in bad)
        f.flush()
        os.fsync(f.fileno())
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.writelines(keep)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for number, _, why in bad:
        log.warning("%s, line %d %s; moved it to %s (its point will be measured again)", path, number, why, rejected)
    return [number for number, _, _ in bad]


def _fields(line: bytes) -> list[str] | None:
    try:
        return next(csv.reader([line.decode("utf-8")]), [])
    except (UnicodeDecodeError, csv.Error):
        return None

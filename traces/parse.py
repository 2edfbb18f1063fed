"""Read a trace file into canonical columns, rejecting bad values with file, column and line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from oracle.files import require_regular_file
from traces import jsonl
from traces.checks import bad_seconds, bad_tokens, not_whole
from traces.formats import Detected, detect, first_line, read_header


@dataclass(frozen=True)
class Parsed:
    """A file in canonical columns, still in file order.

    `frame` has `arrival_s` (float64 s; for datetime formats, from the earliest timestamp),
    `n_in`, `n_out` (int32) and any extras (`model`, `log_type`, categorical; `hash_ids`, the
    prompt's prefix-block hashes, from JSON-lines traces: `traces.jsonl`).
    `t0` is the earliest timestamp (ISO 8601, UTC) for datetime formats.
    """

    frame: pd.DataFrame
    fmt: str
    notes: tuple[str, ...]
    t0: str | None = None


def parse_file(path: Path) -> Parsed:
    """Parse a CSV or JSON-lines (optionally .gz) or Parquet trace file in any known format."""
    require_regular_file(path, "trace file")
    line = None if path.suffix == ".parquet" else first_line(path)
    if line is not None and jsonl.is_jsonl(line):
        return Parsed(jsonl.parse_jsonl(path), jsonl.FORMAT, ())
    det = detect(path, read_header(path, line))
    table = _read_table(path, det)
    frame, t0, notes = _canonical(path, det, table)
    return Parsed(frame, det.fmt.name, det.notes + notes, t0)


def _types(det: Detected) -> dict[str, pa.DataType]:
    fmt, cols = det.fmt, det.columns
    time_type = pa.string() if fmt.time_kind == "datetime" else pa.float64()
    types = {cols[fmt.time]: time_type, cols[fmt.n_in]: pa.int64(), cols[fmt.n_out]: pa.int64()}
    for src, _ in fmt.extras:
        if src in cols:
            types[cols[src]] = pa.dictionary(pa.int32(), pa.string())
    return types


def _read_table(path: Path, det: Detected) -> pa.Table:
    types = _types(det)
    if path.suffix == ".parquet":
        try:
            raw = pq.read_table(path, columns=list(types))
        except (pa.ArrowInvalid, OSError) as e:
            raise ValueError(f"{path}: not a readable Parquet file: {e}") from e
        return _coerce(path, raw, types)
    try:
        return _read_csv(path, types)
    except pa.ArrowInvalid as e:
        try:
            text = _read_csv(path, {c: pa.string() for c in types})
        except pa.ArrowInvalid as e2:
            raise ValueError(f"{path}: not a well-formed CSV file: {e2}") from e2
        try:
            return _coerce(path, text, types)
        except pa.ArrowInvalid:
            raise ValueError(f"{path}: cannot parse: {e}") from e


def _read_csv(path: Path, types: dict[str, pa.DataType]) -> pa.Table:
    convert = pacsv.ConvertOptions(include_columns=list(types), column_types=types)
    return pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 24), convert_options=convert)


def _coerce(path: Path, table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Bring the time and token columns to their types under one rule for CSV and Parquet.

    Token counts must be whole numbers (integers, or floats and text holding whole values);
    seconds must be numbers (or durations); timestamps stay timestamps (converted in
    `_canonical`). Anything else names the column and the first bad row.
    """
    columns = {}
    for col, typ in types.items():
        column = table.column(col)
        if typ == pa.int64():
            column = _whole_numbers(path, col, column)
        elif typ == pa.float64():
            column = _numbers(path, col, column)
        elif typ == pa.string():
            column = _text_or_timestamps(path, col, column)
        columns[col] = column
    return pa.table(columns)


def _is_temporal(typ: pa.DataType) -> bool:
    return pa.types.is_timestamp(typ) or pa.types.is_date(typ)


def _is_text(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _wrong_type(path: Path, col: str, column: pa.ChunkedArray, wanted: str) -> None:
    values = column.to_pandas()
    _raise_at(path, col, 0, values, f"is a {column.type} value, but the column must hold {wanted}")


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """A dictionary-encoded (categorical) column as plain values."""
    return pc.cast(column, column.type.value_type) if pa.types.is_dictionary(column.type) else column


def _whole_numbers(path: Path, col: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    column = _decoded(column)
    typ = column.type
    if pa.types.is_integer(typ):
        if pa.types.is_uint64(typ):  # values of 2**63 and more cannot be cast; `_tokens` rejects them as too large
            column = pc.min_element_wise(column, pa.scalar(np.iinfo(np.int64).max, pa.uint64()))
        return pc.cast(column, pa.int64())
    if not (pa.types.is_floating(typ) or pa.types.is_decimal(typ) or _is_text(typ)):
        _wrong_type(path, col, column, "integer token counts")
    values = column.to_pandas()
    numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
    present = values.notna().to_numpy()
    n = numbers.to_numpy()
    bad = present & not_whole(n)
    if bad.any():
        _raise_at(path, col, int(np.argmax(bad)), values, "is not an integer token count")
    return pa.chunked_array([pa.array(n, from_pandas=True).cast(pa.int64())])


def _numbers(path: Path, col: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    column = _decoded(column)
    typ = column.type
    if _is_temporal(typ):
        return column  # timestamps: converted to seconds from the earliest in `_canonical`
    if pa.types.is_duration(typ):
        return pc.divide(pc.cast(pc.cast(column, pa.duration("ns")), pa.int64()).cast(pa.float64()), 1e9)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return pc.cast(column, pa.float64())
    if not _is_text(typ):
        _wrong_type(path, col, column, "a number of seconds")
    values = column.to_pandas()
    numbers = pd.to_numeric(values, errors="coerce")
    bad = (numbers.isna() & values.notna()).to_numpy()
    if bad.any():
        _raise_at(path, col, int(np.argmax(bad)), values, "is not a number of seconds")
    return pa.chunked_array([pa.array(numbers.astype(np.float64).to_numpy(), from_pandas=True)])


def _text_or_timestamps(path: Path, col: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    column = _decoded(column)
    if _is_temporal(column.type) or _is_text(column.type):
        return column
    _wrong_type(path, col, column, "ISO 8601 timestamps (text) or a timestamp type")
    return column  # unreachable: _wrong_type raises


def _raise_at(path: Path, col: str, row: int, values, problem: str) -> None:
    value = values[row]
    value = value.item() if isinstance(value, np.generic) else value
    where = f"row {row + 1}" if path.suffix == ".parquet" else f"line {row + 2} (data row {row + 1})"
    raise ValueError(f"{path}: column {col!r}, {where}: {value!r} {problem}")


def _check_nulls(path: Path, table: pa.Table) -> None:
    for col in table.column_names:
        column = table.column(col)
        if column.null_count:
            row = pc.index(pc.is_null(column), True).as_py()
            _raise_at(path, col, row, {row: ""}, "is missing")


def _tokens(path: Path, table: pa.Table, col: str) -> np.ndarray:
    values = table.column(col).to_numpy()
    bad = bad_tokens(values)
    if bad is not None:
        _raise_at(path, col, bad[0], values, bad[1])
    return values.astype(np.int32)


def _canonical(path: Path, det: Detected, table: pa.Table):
    if table.num_rows == 0:
        raise ValueError(f"{path}: no data rows after the header")
    _check_nulls(path, table)
    fmt, cols = det.fmt, det.columns
    time_col = table.column(cols[fmt.time])
    if _is_temporal(time_col.type):
        arrival, t0, notes = _timestamps(path, cols[fmt.time], time_col)
        if fmt.time_kind == "seconds":
            notes += (f"{cols[fmt.time]}: a {time_col.type} column, converted to seconds from the earliest timestamp",)
    elif fmt.time_kind == "datetime":
        arrival, t0, notes = _datetimes(path, cols[fmt.time], time_col)
    else:
        arrival, t0, notes = _seconds(path, cols[fmt.time], time_col), None, ()
    data = {
        "arrival_s": arrival,
        "n_in": _tokens(path, table, cols[fmt.n_in]),
        "n_out": _tokens(path, table, cols[fmt.n_out]),
    }
    for src, ours in fmt.extras:
        if src in cols:
            data[ours] = table.column(cols[src]).to_pandas().astype("category")
    return pd.DataFrame(data), t0, notes


def _seconds(path: Path, col: str, column: pa.ChunkedArray) -> np.ndarray:
    values = column.to_numpy().astype(np.float64, copy=False)
    bad = bad_seconds(values)
    if bad is not None:
        _raise_at(path, col, bad[0], values, bad[1])
    return values


def _datetimes(path: Path, col: str, column: pa.ChunkedArray):
    """ISO 8601 strings (with or without fraction and UTC offset) to seconds from the earliest."""
    notes = _format_notes(col, column)
    for typ in (pa.timestamp("ns", tz="UTC"), pa.timestamp("ns")):
        try:
            ns = _cast_ns(column, typ)
            break
        except pa.ArrowInvalid:
            continue
    else:
        ns = _pandas_ns(path, col, column)
        notes += (f"{col}: mixed UTC offsets, timestamps without one taken as UTC",)
    t0 = int(ns.min())
    iso = pd.Timestamp(t0, unit="ns", tz="UTC").isoformat()
    return (ns - t0).astype(np.float64) / 1e9, iso, notes


def _timestamps(path: Path, col: str, column: pa.ChunkedArray):
    """A timestamp (or date) column to seconds from the earliest; zone-less values taken as UTC."""
    tz = getattr(column.type, "tz", None)
    notes: tuple[str, ...] = () if tz else (f"{col}: timestamps without a time zone taken as UTC",)
    try:
        ns = _cast_ns(column, pa.timestamp("ns", tz="UTC") if tz else pa.timestamp("ns"))
    except pa.ArrowInvalid as e:
        raise ValueError(
            f"{path}: column {col!r}: timestamps outside the years 1678-2262 cannot be converted to seconds: {e}"
        ) from e
    t0 = int(ns.min())
    iso = pd.Timestamp(t0, unit="ns", tz="UTC").isoformat()
    return (ns - t0).astype(np.float64) / 1e9, iso, notes


def _cast_ns(column: pa.ChunkedArray, typ: pa.DataType) -> np.ndarray:
    return pc.cast(column, typ).combine_chunks().cast(pa.int64()).to_numpy()


def _pandas_ns(path: Path, col: str, column: pa.ChunkedArray) -> np.ndarray:
    values = column.to_pandas()
    stamps = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        _raise_at(path, col, int(np.argmax(bad)), values, "is not an ISO 8601 timestamp")
    return stamps.dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)


def _format_notes(col: str, column: pa.ChunkedArray) -> tuple[str, ...]:
    n = len(column)
    no_fraction = n - (pc.sum(pc.match_substring(column, ".")).as_py() or 0)
    if 0 < no_fraction < n:
        return (f"{col}: mixed formats, {no_fraction:,} timestamps without fractional seconds parsed as whole seconds",)
    return ()

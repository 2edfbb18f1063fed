"""Known trace file formats and their detection from a file's header."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from oracle.files import read_first_line


@dataclass(frozen=True)
class Format:
    """Column names of one trace format; `extras` maps optional source columns to our names."""

    name: str
    time: str
    time_kind: str  # "datetime" (ISO 8601 strings) or "seconds" (numbers)
    n_in: str
    n_out: str
    extras: tuple[tuple[str, str], ...] = ()

    @property
    def required(self) -> tuple[str, str, str]:
        return (self.time, self.n_in, self.n_out)


FORMATS = (
    Format("azure", "TIMESTAMP", "datetime", "ContextTokens", "GeneratedTokens"),
    Format(
        "burstgpt",
        "Timestamp",
        "seconds",
        "Request tokens",
        "Response tokens",
        (("Model", "model"), ("Log Type", "log_type")),
    ),
    Format("native", "arrival_s", "seconds", "n_in", "n_out", (("model", "model"), ("log_type", "log_type"))),
)


@dataclass(frozen=True)
class Detected:
    """A detected format and the file's actual name for each format column it has."""

    fmt: Format
    columns: dict[str, str]  # format column -> column name in the file
    notes: tuple[str, ...]


def _norm(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def first_line(path: Path) -> bytes:
    """The first line of a text trace file (`oracle.files.read_first_line`'s bound); ValueError if unreadable."""
    try:
        return read_first_line(path, "trace file")
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: cannot read a CSV header: {e}") from e


def read_header(path: Path, line: bytes | None = None) -> list[str]:
    """Column names of a CSV (optionally .gz) or Parquet file; `line`: its first line, if read already."""
    if path.suffix == ".parquet":
        return list(pq.read_schema(path).names)
    try:
        first = (first_line(path) if line is None else line).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: cannot read a CSV header: {e}") from e
    if not first.strip():
        raise ValueError(f"{path}: empty file, expected a CSV header line")
    return next(csv.reader(io.StringIO(first)))


def detect(path: Path, header: list[str]) -> Detected:
    """Match a header to a known format (case, spaces and underscores ignored)."""
    by_norm = {_norm(h): h for h in header}
    for fmt in FORMATS:
        if all(_norm(c) in by_norm for c in fmt.required):
            return _detected(fmt, by_norm)
    raise ValueError(_no_format_message(path, header, by_norm))


def _detected(fmt: Format, by_norm: dict[str, str]) -> Detected:
    wanted = list(fmt.required) + [src for src, _ in fmt.extras]
    columns = {c: by_norm[_norm(c)] for c in wanted if _norm(c) in by_norm}
    notes = tuple(f"column {actual!r} read as {c!r}" for c, actual in columns.items() if actual != c)
    return Detected(fmt, columns, notes)


def _no_format_message(path: Path, header: list[str], by_norm: dict[str, str]) -> str:
    def missing(fmt: Format) -> list[str]:
        return [c for c in fmt.required if _norm(c) not in by_norm]

    closest = min(FORMATS, key=lambda f: len(missing(f)))
    known = "; ".join(f"{f.name}: {', '.join(f.required)}" for f in FORMATS)
    return (
        f"{path}: header {header} is not a known trace format; closest is {closest.name}, "
        f"missing column(s) {missing(closest)}. Known formats (required columns): {known}"
    )

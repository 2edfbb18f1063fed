"""Read a JSON-lines trace in the Mooncake schema, checking every line (named by its number).

Each line is one request: `timestamp` (arrival, ms from the trace start), `input_length`,
`output_length` (tokens) and `hash_ids`, the prompt's prefix-block hashes (BLOCK_TOKENS tokens a
block; two requests whose lists start with the same k ids share their first k blocks; the last
block may be partial, so a prompt has at most ceil(input_length / BLOCK_TOKENS) of them).
This is the schema of the Mooncake FAST'25 traces (conversation, synthetic, tool-agent).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from traces.checks import bad_seconds, bad_tokens

FORMAT = "mooncake"
BLOCK_TOKENS = 512
"""Tokens per prefix block of `hash_ids` (the Mooncake traces' block size)."""
KEYS = ("timestamp", "input_length", "output_length", "hash_ids")
HASH_IDS_DTYPE = pd.ArrowDtype(pa.list_(pa.int64()))
"""dtype of the `hash_ids` column: one list of int64 block hashes per request."""


def block_tokens(frame: pd.DataFrame) -> int:
    """Tokens per prefix block of a trace's `hash_ids`: its `attrs["hash_block_tokens"]` (a
    synthetic trace's), else the Mooncake traces' `BLOCK_TOKENS`."""
    return int(frame.attrs.get("hash_block_tokens", BLOCK_TOKENS))


_INT64 = np.iinfo(np.int64)


class _Columns:
    """The values read so far, with the file line each request came from."""

    def __init__(self) -> None:
        self.lines: list[int] = []
        self.time: list[float] = []
        self.n_in: list[float] = []
        self.n_out: list[float] = []
        self.counts: list[int] = []
        self.ids: list[int] = []


def is_jsonl(first_line: bytes) -> bool:
    """Whether a file's first line (bytes) opens a JSON object, i.e. the file is JSON lines."""
    return first_line.lstrip(b"\xef\xbb\xbf \t").startswith(b"{")


def parse_jsonl(path: Path) -> pd.DataFrame:
    """Parse a JSON-lines trace (optionally .gz) into canonical columns plus `hash_ids`.

    Returns `arrival_s` (float64 s from the trace's zero), `n_in`, `n_out` (int32 tokens) and
    `hash_ids` (HASH_IDS_DTYPE), in file order. Blank lines are skipped. A bad line raises
    ValueError naming the file, the line number and the key.
    """
    cols = _Columns()
    for number, record in _records(path):
        _read(path, number, record, cols)
    if not cols.lines:
        raise ValueError(f"{path}: no requests (JSON lines with keys {list(KEYS)})")
    return pd.DataFrame(_checked(path, cols))


def _records(path: Path) -> Iterator[tuple[int, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: line {number}: not a JSON object: {e}") from None


def _fail(path: Path, number: int, key: str, value: object, problem: str) -> None:
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    raise ValueError(f"{path}: line {number}: {key!r} {text} {problem}")


def _number(path: Path, number: int, record: dict, key: str) -> float:
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(path, number, key, value, "is not a number")
    return float(value)


def _read(path: Path, number: int, record: Any, cols: _Columns) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{path}: line {number}: a JSON {type(record).__name__}, expected an object with {list(KEYS)}")
    missing = [k for k in KEYS if k not in record]
    if missing:
        raise ValueError(f"{path}: line {number}: missing key(s) {missing}; a request needs {list(KEYS)}")
    ids = record["hash_ids"]
    if not isinstance(ids, list):
        _fail(path, number, "hash_ids", ids, "is not a list of integers (the prompt's block hashes)")
    for k, h in enumerate(ids):
        if isinstance(h, bool) or not isinstance(h, int) or not _INT64.min <= h <= _INT64.max:
            _fail(path, number, "hash_ids", h, f"(item {k}) is not a 64-bit integer block hash")
    cols.lines.append(number)
    cols.time.append(_number(path, number, record, "timestamp"))
    cols.n_in.append(_number(path, number, record, "input_length"))
    cols.n_out.append(_number(path, number, record, "output_length"))
    cols.counts.append(len(ids))
    cols.ids.extend(ids)


def _first_bad(path: Path, cols: _Columns, key: str, values: np.ndarray, bad: tuple[int, str] | None) -> None:
    if bad is not None:
        row, problem = bad
        _fail(path, cols.lines[row], key, values[row].item(), problem)


def _checked(path: Path, cols: _Columns) -> dict[str, Any]:
    """The columns, after the value rules of `traces.checks` and the block-count rule."""
    arrival = np.asarray(cols.time, dtype=np.float64) / 1000.0
    _first_bad(path, cols, "timestamp", np.asarray(cols.time), bad_seconds(arrival))
    lengths = {}
    for key, values in (("input_length", cols.n_in), ("output_length", cols.n_out)):
        array = np.asarray(values, dtype=np.float64)
        _first_bad(path, cols, key, array, bad_tokens(array))
        lengths[key] = array.astype(np.int32)
    counts = np.asarray(cols.counts, dtype=np.int64)
    allowed = -(-lengths["input_length"].astype(np.int64) // BLOCK_TOKENS)
    over = counts > allowed
    if over.any():
        row = int(np.argmax(over))
        raise ValueError(
            f"{path}: line {cols.lines[row]}: 'hash_ids' has {counts[row]} blocks, more than the {allowed[row]} "
            f"that input_length {lengths['input_length'][row]} allows (ceil(input_length / {BLOCK_TOKENS}))"
        )
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    ids = pa.ListArray.from_arrays(pa.array(offsets), pa.array(cols.ids, type=pa.int64()))
    return {
        "arrival_s": arrival,
        "n_in": lengths["input_length"],
        "n_out": lengths["output_length"],
        "hash_ids": pd.Series(pd.arrays.ArrowExtensionArray(ids)),
    }

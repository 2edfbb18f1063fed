"""Benchmark tables in the ML.ENERGY format and their output-length histograms, read and checked.

Errors name the file, the column and the row; rows are 0-based data rows (a CSV's line number is
row + 2), as in `calibrate.table`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from oracle.files import NotARegularFileError, require_regular_file

BENCHMARK_FILE = "data/mlenergy_v3_lm_arena_chat.csv"
HISTOGRAM_FILE = "data/mlenergy_v3_output_lengths.csv"
KEY = ("model_id", "gpu_model", "max_num_seqs")
METRICS = ("batch", "throughput", "energy_per_token", "power", "itl_median")
# Benchmark column of each metric: batch (sequences), tokens/s, J per output token, W, ms.
MEASURED_COLUMNS = {
    "batch": "avg_batch_size",
    "throughput": "output_throughput_tokens_per_sec",
    "energy_per_token": "energy_per_token_joules",
    "power": "avg_power_watts",
    "itl_median": "median_itl_ms",
}
HISTOGRAM_COLUMNS = (*KEY, "bin_lo", "bin_hi", "count")


class BenchmarkTableError(ValueError):
    """A benchmark or histogram table that cannot be used; the message names file, column and row."""


@dataclass(frozen=True)
class Metrics:
    """Steady-state figures of one run: mean running sequences, output tokens/s, J per output
    token, mean power (W), median inter-token latency (ms)."""

    batch: float
    throughput: float
    energy_per_token: float
    power: float
    itl_median: float


@dataclass(frozen=True)
class BenchmarkRow:
    """One measured run: the model (HF id), GPU label, batch cap and its measured metrics."""

    model_id: str
    gpu_model: str
    max_num_seqs: int
    measured: Metrics

    @property
    def key(self) -> tuple[str, str, int]:
        """(model_id, gpu_model, max_num_seqs), the key of its output-length histogram."""
        return (self.model_id, self.gpu_model, self.max_num_seqs)


@dataclass(frozen=True)
class OutputHistogram:
    """Measured output lengths of one run: bins [lo, hi) in tokens and their request counts."""

    lo: np.ndarray
    hi: np.ndarray
    count: np.ndarray

    @property
    def total(self) -> int:
        """Requests in the run (1024 × num_request_repeats in ML.ENERGY v3)."""
        return int(self.count.sum())


def default_benchmark() -> Path:
    """The shipped ML.ENERGY v3 LM Arena chat table (oracle/data/PROVENANCE.md)."""
    return Path(str(resources.files("oracle").joinpath(BENCHMARK_FILE)))


def default_histograms() -> Path:
    """The shipped output-length histograms of the same runs."""
    return Path(str(resources.files("oracle").joinpath(HISTOGRAM_FILE)))


def read_benchmark(path: str | Path) -> list[BenchmarkRow]:
    """Read and check a benchmark CSV (see `parse_benchmark`)."""
    return parse_benchmark(_read_csv(path, "benchmark table"), source=str(path))


def parse_benchmark(df: pd.DataFrame, source: str = "<benchmark>") -> list[BenchmarkRow]:
    """Rows of a benchmark table; every metric must be a positive number, the cap a positive integer."""
    _require(df, (*KEY, *MEASURED_COLUMNS.values()), source)
    caps = _positive(df, "max_num_seqs", source, integer=True)
    values = {m: _positive(df, col, source) for m, col in MEASURED_COLUMNS.items()}
    models, gpus = _text(df, "model_id", source), _text(df, "gpu_model", source)
    return [
        BenchmarkRow(models[i], gpus[i], int(caps[i]), Metrics(**{m: float(v[i]) for m, v in values.items()}))
        for i in range(len(df))
    ]


def read_histograms(path: str | Path) -> dict[tuple[str, str, int], OutputHistogram]:
    """Read and check an output-length histogram CSV (see `parse_histograms`)."""
    return parse_histograms(_read_csv(path, "output-length table"), source=str(path))


def parse_histograms(df: pd.DataFrame, source: str = "<histograms>") -> dict[tuple[str, str, int], OutputHistogram]:
    """Histograms keyed by (model_id, gpu_model, max_num_seqs); bins need lo < hi, counts ≥ 0."""
    _require(df, HISTOGRAM_COLUMNS, source)
    caps = _positive(df, "max_num_seqs", source, integer=True)
    lo, hi = _number(df, "bin_lo", source), _number(df, "bin_hi", source)
    count = _number(df, "count", source)
    _fail_at(~(hi > lo), "bin_hi", source, "must exceed bin_lo", hi)
    _fail_at((count < 0) | (count != np.round(count)), "count", source, "must be a non-negative integer", count)
    _fail_at(lo < 0, "bin_lo", source, "must be ≥ 0 (tokens)", lo)
    keyed = pd.DataFrame(
        {"model": _text(df, "model_id", source), "gpu": _text(df, "gpu_model", source), "cap": caps.astype(np.int64)}
    )
    out = {}
    for (model, gpu, cap), idx in keyed.groupby(["model", "gpu", "cap"], sort=False).indices.items():
        out[(str(model), str(gpu), int(cap))] = OutputHistogram(lo[idx], hi[idx], count[idx].astype(np.int64))
    for key, h in out.items():
        if h.total <= 0:
            raise BenchmarkTableError(f"{source}: histogram {key} has no requests (all counts are 0)")
    return out


def _read_csv(path: str | Path, what: str) -> pd.DataFrame:
    try:
        path = require_regular_file(path, what)
    except (FileNotFoundError, NotARegularFileError) as e:
        raise BenchmarkTableError(str(e)) from None
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise BenchmarkTableError(f"{path}: not a readable CSV ({e})") from None
    if df.empty:
        raise BenchmarkTableError(f"{path}: the table has no rows")
    return df


def _require(df: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BenchmarkTableError(f"{source}: missing required column(s) {missing}; required are {list(columns)}")


def _number(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    _fail_at(~np.isfinite(values), col, source, "is not a number", df[col].to_numpy())
    return values


def _positive(df: pd.DataFrame, col: str, source: str, integer: bool = False) -> np.ndarray:
    values = _number(df, col, source)
    _fail_at(values <= 0, col, source, "must be positive", values)
    if integer:
        _fail_at(values != np.round(values), col, source, "must be an integer", values)
    return values


def _text(df: pd.DataFrame, col: str, source: str) -> list[str]:
    values = df[col]
    bad = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    _fail_at(bad, col, source, "is empty", values.to_numpy())
    return [str(v).strip() for v in values]


def _fail_at(bad: np.ndarray, col: str, source: str, what: str, values: np.ndarray) -> None:
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        raise BenchmarkTableError(f"{source}: column {col!r} row {row} {what}, got {values[row]!r}")

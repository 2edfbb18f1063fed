"""Benchmark tables in the ML.ENERGY format and their output-length histograms, read and checked.

Two formats are read. The wide one (`mlenergy_v3_llm.csv`: every model, task and GPUs per replica)
has the columns `config_id, task, num_gpus, expert_parallel, data_parallel, weight_precision`, and
its histograms are keyed by `config_id`. The old one (`mlenergy_v3_lm_arena_chat.csv`: three dense
models on one GPU, LM Arena chat, the table the oracles' constants were calibrated on) has none of
them required, and its histograms are keyed by `(model_id, gpu_model, max_num_seqs)`; columns of
the wide format it does carry are read. `BenchmarkRow.hist_key` is a row's histogram key either way.

Errors name the file, the column and the row; rows are 0-based data rows (a CSV's line number is
row + 2), as in `calibrate.table`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from oracle.files import NotARegularFileError, require_regular_file

BENCHMARK_FILE = "data/mlenergy_v3_lm_arena_chat.csv"  # the calibration table (old format)
HISTOGRAM_FILE = "data/mlenergy_v3_output_lengths.csv"
WIDE_BENCHMARK_FILE = "data/mlenergy_v3_llm.csv"  # every model, task and layout (wide format)
WIDE_HISTOGRAM_FILE = "data/mlenergy_v3_llm_output_lengths.csv"
KEY = ("model_id", "gpu_model", "max_num_seqs")
# Columns that make a table the wide format (all of them present); the old format may carry some.
WIDE_COLUMNS = ("config_id", "task", "num_gpus", "expert_parallel", "data_parallel", "weight_precision")
DEFAULT_TASK = "lm-arena-chat"
DEFAULT_PRECISION = "bfloat16"
METRICS = ("batch", "throughput", "energy_per_token", "power", "itl_median")
# Benchmark column of each metric: batch (sequences), tokens/s, J per output token, W, ms.
MEASURED_COLUMNS = {
    "batch": "avg_batch_size",
    "throughput": "output_throughput_tokens_per_sec",
    "energy_per_token": "energy_per_token_joules",
    "power": "avg_power_watts",
    "itl_median": "median_itl_ms",
}
BIN_COLUMNS = ("bin_lo", "bin_hi", "count")
HISTOGRAM_COLUMNS = (*KEY, *BIN_COLUMNS)  # old format; the wide one keys by config_id instead

HistKey = str | tuple[str, str, int]  # a histogram's key: config_id, or (model_id, gpu_model, max_num_seqs)
# Histograms by HistKey; typed with Any keys so that callers written for one format's keys type-check.
Histograms = dict[Any, "OutputHistogram"]


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
    """One measured run: the model (HF id), GPU label, batch cap and its measured metrics; in the
    wide format also its configuration id, task, GPUs per deployment (`num_gpus`), expert- and
    data-parallel sizes, checkpoint precision and the leaderboard's architecture label ('Dense
    Transformer', 'MoE', 'Mamba-Transformer Hybrid'; None where the table has no such column)."""

    model_id: str
    gpu_model: str
    max_num_seqs: int
    measured: Metrics
    config_id: str | None = None
    task: str = DEFAULT_TASK
    num_gpus: int = 1
    expert_parallel: int = 1
    data_parallel: int = 1
    weight_precision: str = DEFAULT_PRECISION
    architecture: str | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        """(model_id, gpu_model, max_num_seqs): the old format's key (not unique in the wide one)."""
        return (self.model_id, self.gpu_model, self.max_num_seqs)

    @property
    def hist_key(self) -> HistKey:
        """The key of its output-length histogram: `config_id` in the wide format, else `key`."""
        return self.key if self.config_id is None else self.config_id

    @property
    def label(self) -> str:
        """'model on GPU at max_num_seqs N', with the task and GPUs where they are not the defaults."""
        gpus = f"{self.num_gpus}× {self.gpu_model}" if self.num_gpus > 1 else self.gpu_model
        task = "" if self.task == DEFAULT_TASK else f" ({self.task})"
        return f"{self.model_id}{task} on {gpus} at max_num_seqs {self.max_num_seqs}"


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
    """The shipped ML.ENERGY v3 LM Arena chat table, three dense models on one H100 or B200: the
    table the oracles' hardware constants were calibrated on (`sim.validation.calibrate`,
    `oracle.hwcal`; oracle/data/PROVENANCE.md)."""
    return _data(BENCHMARK_FILE)


def default_histograms() -> Path:
    """The shipped output-length histograms of the `default_benchmark` runs."""
    return _data(HISTOGRAM_FILE)


def wide_benchmark() -> Path:
    """The shipped wide ML.ENERGY v3 table: every LLM row of the leaderboard (21 models, three
    tasks, 1–8 GPUs per deployment, H100 and B200); what `python -m sim.validate` replays."""
    return _data(WIDE_BENCHMARK_FILE)


def wide_histograms() -> Path:
    """The shipped output-length histograms of the `wide_benchmark` runs, keyed by config_id."""
    return _data(WIDE_HISTOGRAM_FILE)


def _data(name: str) -> Path:
    return Path(str(resources.files("oracle").joinpath(name)))


def is_wide(df: pd.DataFrame) -> bool:
    """Whether a benchmark table has a `config_id` column (the wide format's key)."""
    return "config_id" in df.columns


def read_benchmark(path: str | Path) -> list[BenchmarkRow]:
    """Read and check a benchmark CSV (see `parse_benchmark`)."""
    return parse_benchmark(_read_csv(path, "benchmark table"), source=str(path))


def parse_benchmark(df: pd.DataFrame, source: str = "<benchmark>") -> list[BenchmarkRow]:
    """Rows of a benchmark table, wide or old format (a table with `config_id` must have every
    column of `WIDE_COLUMNS`; an old one may carry some of them). Every metric must be a positive
    number; the cap, `num_gpus`, `expert_parallel` and `data_parallel` positive integers, the last
    two at most `num_gpus`; text columns non-empty; config ids unique."""
    required = (*KEY, *MEASURED_COLUMNS.values())
    if is_wide(df):
        missing = [c for c in WIDE_COLUMNS if c not in df.columns]
        if missing:
            raise BenchmarkTableError(
                f"{source}: a table with 'config_id' is in the wide format and needs column(s) {missing}; "
                f"the wide format's columns are {list(WIDE_COLUMNS)}"
            )
    _require(df, required, source)
    n = len(df)
    caps = _positive(df, "max_num_seqs", source, integer=True)
    values = {m: _positive(df, col, source) for m, col in MEASURED_COLUMNS.items()}
    models, gpus = _text(df, "model_id", source), _text(df, "gpu_model", source)
    count = {c: _optional_count(df, c, source) for c in ("num_gpus", "expert_parallel", "data_parallel")}
    for c in ("expert_parallel", "data_parallel"):
        _fail_at(count[c] > count["num_gpus"], c, source, "must be at most num_gpus", count[c])
    text = {c: _optional_text(df, c, source) for c in ("config_id", "task", "weight_precision", "architecture")}
    ids = text["config_id"]
    if ids is not None:
        dup = pd.Series(ids).duplicated().to_numpy()
        _fail_at(dup, "config_id", source, "repeats an earlier row's config_id", np.asarray(ids, dtype=object))
    return [
        BenchmarkRow(
            models[i],
            gpus[i],
            int(caps[i]),
            Metrics(**{m: float(v[i]) for m, v in values.items()}),
            config_id=None if ids is None else ids[i],
            task=DEFAULT_TASK if text["task"] is None else text["task"][i],
            num_gpus=int(count["num_gpus"][i]),
            expert_parallel=int(count["expert_parallel"][i]),
            data_parallel=int(count["data_parallel"][i]),
            weight_precision=DEFAULT_PRECISION if text["weight_precision"] is None else text["weight_precision"][i],
            architecture=None if text["architecture"] is None else text["architecture"][i],
        )
        for i in range(n)
    ]


def read_histograms(path: str | Path) -> Histograms:
    """Read and check an output-length histogram CSV (see `parse_histograms`)."""
    return parse_histograms(_read_csv(path, "output-length table"), source=str(path))


def parse_histograms(df: pd.DataFrame, source: str = "<histograms>") -> Histograms:
    """Histograms keyed by `config_id` where the table has that column (the wide format), else by
    (model_id, gpu_model, max_num_seqs); bins need lo < hi, counts ≥ 0."""
    wide = is_wide(df)
    _require(df, ("config_id", *BIN_COLUMNS) if wide else HISTOGRAM_COLUMNS, source)
    lo, hi = _number(df, "bin_lo", source), _number(df, "bin_hi", source)
    count = _number(df, "count", source)
    _fail_at(~(hi > lo), "bin_hi", source, "must exceed bin_lo", hi)
    _fail_at((count < 0) | (count != np.round(count)), "count", source, "must be a non-negative integer", count)
    _fail_at(lo < 0, "bin_lo", source, "must be ≥ 0 (tokens)", lo)
    out: Histograms = {}
    if wide:
        ids = pd.Series(_text(df, "config_id", source))
        for key, idx in ids.groupby(ids, sort=False).indices.items():
            out[str(key)] = OutputHistogram(lo[idx], hi[idx], count[idx].astype(np.int64))
    else:
        caps = _positive(df, "max_num_seqs", source, integer=True)
        keyed = pd.DataFrame(
            {
                "model": _text(df, "model_id", source),
                "gpu": _text(df, "gpu_model", source),
                "cap": caps.astype(np.int64),
            }
        )
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


def _optional_count(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """A positive-integer column, or 1 on every row where the table has no such column."""
    if col not in df.columns:
        return np.ones(len(df), dtype=np.int64)
    return _positive(df, col, source, integer=True).astype(np.int64)


def _optional_text(df: pd.DataFrame, col: str, source: str) -> list[str] | None:
    return _text(df, col, source) if col in df.columns else None


def _text(df: pd.DataFrame, col: str, source: str) -> list[str]:
    values = df[col]
    bad = values.isna().to_numpy() | (values.astype(str).str.strip() == "").to_numpy()
    _fail_at(bad, col, source, "is empty", values.to_numpy())
    return [str(v).strip() for v in values]


def _fail_at(bad: np.ndarray, col: str, source: str, what: str, values: np.ndarray) -> None:
    if np.any(bad):
        row = int(np.flatnonzero(bad)[0])
        raise BenchmarkTableError(f"{source}: column {col!r} row {row} {what}, got {values[row]!r}")

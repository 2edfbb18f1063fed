"""Replay a measured serving benchmark through the simulator and compare, metric by metric.

    python -m sim.validate [benchmark=FILE] [output_lengths=FILE] [out=DIR] [seed=0]
        [prompt_kind=lognormal] [prompt_mean=TOKENS] [prompt_sigma=SIGMA] [plot=true] [progress=true]
        [scheduler=vllm]

Every row of the benchmark table (ML.ENERGY format; default: the shipped LM Arena chat table and
its output-length histograms) is replayed under the benchmark's settings with the shipped oracle
of its model × GPU and the `vllm` scheduler (`sim.validation`; `scheduler=` replays it with
another engine model, to see what the engine model is worth). Prints per row and as mean absolute
error (all rows, per GPU, per model): average batch, output throughput, energy per output token,
average power and median ITL, simulated against measured; writes DIR/validation.csv and
DIR/validation.png. prompt_mean and prompt_sigma default to the lognormal prompts each oracle was
calibrated with (python -m sim.validation.calibrate fits them).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from oracle.model import Oracle
from sim.notices import show_warnings_once
from sim.schedulers import SCHEDULERS
from sim.validation.plot import plot_validation
from sim.validation.replay import default_prompts, mean_abs_error, validate
from sim.validation.table import (
    METRICS,
    BenchmarkRow,
    BenchmarkTableError,
    default_benchmark,
    default_histograms,
    read_benchmark,
    read_histograms,
)
from sim.validation.workload import PROMPT_KINDS, PromptLengths

PROG = "sim.validate"


@dataclass(frozen=True)
class ValidateArgs:
    """Arguments of `python -m sim.validate` (key=value on the command line)."""

    benchmark: str | None = None
    output_lengths: str | None = None
    out: str = "validation"
    seed: int = 0
    prompt_kind: str = "lognormal"
    prompt_mean: float | None = None
    prompt_sigma: float | None = None
    plot: bool = True
    progress: bool = True
    scheduler: str = "vllm"

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {self.scheduler!r}")
        if self.prompt_kind not in PROMPT_KINDS:
            raise ValueError(f"prompt_kind must be one of {PROMPT_KINDS}, got {self.prompt_kind!r}")
        if self.prompt_sigma is not None and not self.prompt_sigma >= 0:
            raise ValueError(f"prompt_sigma must be null or ≥ 0, got {self.prompt_sigma}")
        if self.prompt_mean is not None and not self.prompt_mean >= 1:
            raise ValueError(f"prompt_mean must be null or ≥ 1 (tokens), got {self.prompt_mean}")


def parse_args(argv: Sequence[str]) -> ValidateArgs:
    """`key=value` arguments into ValidateArgs; unknown keys and bad values raise ValueError."""
    fields = {f.name: f for f in dataclasses.fields(ValidateArgs)}
    values: dict[str, object] = {}
    for arg in argv:
        key, sep, raw = arg.partition("=")
        if not sep:
            raise ValueError(f"arguments are key=value, got {arg!r}")
        if key not in fields:
            raise ValueError(f"unknown argument {key!r}; known: {sorted(fields)}")
        values[key] = _coerce(key, raw, str(fields[key].type))
    return ValidateArgs(**values)  # type: ignore[arg-type]


def _coerce(key: str, raw: str, hint: str) -> object:
    if "None" in hint and raw.lower() in ("null", "none", ""):
        return None
    try:
        if hint.startswith("int"):
            return int(raw)
        if hint.startswith("float"):
            return float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None
    if hint.startswith("bool"):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{key} must be true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    return raw


def run(args: ValidateArgs) -> pd.DataFrame:
    """Replay, print, write validation.csv (and the plot); return the comparison table."""
    rows = read_benchmark(args.benchmark or default_benchmark())
    histograms = read_histograms(args.output_lengths or default_histograms())

    def prompts(row: BenchmarkRow, oracle: Oracle) -> PromptLengths:
        calibrated = default_prompts(oracle)
        return PromptLengths(
            args.prompt_kind,
            calibrated.mean_tokens if args.prompt_mean is None else args.prompt_mean,
            calibrated.sigma if args.prompt_sigma is None else args.prompt_sigma,
        )

    start = time.perf_counter()
    df = validate(rows, histograms, prompts, seed=args.seed, progress=args.progress, scheduler=args.scheduler)
    wall = time.perf_counter() - start
    print(format_rows(df))
    print(format_errors(df))
    print(f"replayed {len(df)} of {len(rows)} rows in {wall:.1f} s ({wall / max(len(df), 1):.2f} s per row)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "validation.csv", index=False)
    print(f"wrote {out / 'validation.csv'}")
    if args.plot and not df.empty:
        print(f"wrote {plot_validation(df, out / 'validation.png')}")
    return df


def format_rows(df: pd.DataFrame) -> str:
    """Per row: 'measured → simulated (error %)' for every metric."""
    if df.empty:
        return "no rows replayed"
    show = pd.DataFrame(
        {
            "model": df["model_id"].str.split("/").str[-1],
            "gpu": df["gpu_model"],
            "cap": df["max_num_seqs"],
            **{
                m: [
                    f"{_num(a)} → {_num(b)} ({e:+.1f}%)"
                    for a, b, e in zip(df[f"{m}_measured"], df[f"{m}_simulated"], df[f"{m}_err_pct"], strict=True)
                ]
                for m in METRICS
            },
        }
    )
    units = "batch: sequences, throughput: output tokens/s, energy_per_token: J, power: W, itl_median: ms"
    return f"measured → simulated (error) per row; {units}\n{show.to_string(index=False)}"


def format_errors(df: pd.DataFrame) -> str:
    """Mean absolute error (%) per metric: all rows, per GPU, per model."""
    if df.empty:
        return ""
    parts = [mean_abs_error(df), mean_abs_error(df, "gpu_model"), mean_abs_error(df, "model_id")]
    table = pd.concat(parts).rename(index=lambda s: str(s).split("/")[-1])
    return f"\nmean absolute error (%)\n{table.to_string(float_format=lambda v: f'{v:.1f}')}"


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (1 on bad input, with the reason on stderr)."""
    argv = sys.argv[1:] if argv is None else argv
    show_warnings_once()
    if any(a in ("-h", "--help", "help") for a in argv):
        print(__doc__)
        return 0
    try:
        run(parse_args(argv))
    except (BenchmarkTableError, FileNotFoundError, ValueError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

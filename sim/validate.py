"""Replay a measured serving benchmark through the simulator and compare, metric by metric.

    python -m sim.validate [benchmark=FILE] [output_lengths=FILE] [out=DIR] [seed=0]
        [prompt_kind=lognormal] [prompt_mean=TOKENS] [prompt_sigma=SIGMA] [plot=true] [progress=true]
        [scheduler=vllm] [prefill=true] [constants=shipped] [prefix_caching=true]

Every row of the benchmark table (ML.ENERGY format, wide or old; default: the shipped wide table
oracle/data/mlenergy_v3_llm.csv — 21 models, three tasks, 1–8 GPUs per deployment, H100 and B200 —
and its output-length histograms) is replayed under the benchmark's settings with the oracle of its
model on its replica (`oracle.build.oracle_for`: the shipped one, else derived from the shipped
hardware constants) and the `vllm` scheduler (`sim.validation`; `scheduler=` replays it with
another engine model, to see what the engine model is worth). The benchmark resent each task's
prompts `num_request_repeats` times, and its vLLM's prefix cache shared their KV blocks: the replay
does too (`sim.validation.workload`; prefix_caching=false replays without, to see what it is
worth; sliding-window models replay without, as it says). A configuration that was measured
(a model on a replica layout of a GPU, `oracle.refine.MIN_RUNS` runs or more) ships an oracle
refined on those runs (`oracle.refine`), so its rows are fitted, not predicted; constants=family
replays every row with its GPU family's constants instead, what a configuration nobody measured
gets (the calibration report gives each model's errors with the model left out of that fit too).
Rows with no oracle (unknown model,
a layout the model cannot be served with) are skipped with the reason; data-parallel rows are
replayed as one tensor-parallel replica (`sim.validation.replay`). Prints per row and as mean
absolute error (all rows; per GPU; per GPU × GPUs per replica × dense/MoE/hybrid; per task; per
model): average batch, output throughput, energy per output token,
average power and median ITL, simulated against measured, and, beside it, the measurements' own
scatter (`sim.validation.scatter`: how far each run lies from its sweep's neighbouring caps, what a
model smooth in the cap cannot go below; apart where a neighbour belongs to another phase of the
benchmark's sweep, sent its prompts another number of times), and, where a cap of a sweep was
measured more than once, the spread of its runs, measured and simulated; writes DIR/validation.csv
(with each run's requests and scatter, `m_scatter_pct`) and DIR/validation.png. prompt_mean and
prompt_sigma default to each task's prompts in
oracle/data/task_prompts.csv: LM Arena chat's are the lognormal prompts each oracle was calibrated
with (python -m sim.validation.calibrate), GPQA's and Sourcegraph FIM's are fitted to the batch,
throughput and ITL of their H100 rows (python -m sim.validation.prompts); neither is measured.
benchmark= takes either format (the old one: oracle/data/mlenergy_v3_lm_arena_chat.csv); without
output_lengths= the shipped histograms of the table's format are used. With prefill=true (the
default) a prefill section follows: Splitwise's measured prompt times of Llama-2-70B on H100s
replayed (`sim.validation.prefill`), written to DIR/prefill.csv, and LLMServingSim's measured H100
kernel times of a prefill step carried over to a fused engine (`sim.validation.layers`), written
to DIR/layers.csv.
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
from sim.console.notices import show_warnings_once
from sim.schedulers import SCHEDULERS
from sim.validation.compare import validate
from sim.validation.plot import plot_validation
from sim.validation.row_setup import task_prompts
from sim.validation.scatter import neighbour_scatter
from sim.validation.summary import format_errors, format_rows
from sim.validation.table import (
    BenchmarkRow,
    BenchmarkTableError,
    default_histograms,
    read_benchmark,
    read_histograms,
    wide_benchmark,
    wide_histograms,
)
from sim.validation.workload import PROMPT_KINDS, PromptLengths

PROG = "sim.validate"
CONSTANTS = ("shipped", "family")  # the shipped oracles (measured configurations refined), or every row's GPU family's


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
    prefill: bool = True
    constants: str = "shipped"
    prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {sorted(SCHEDULERS)}, got {self.scheduler!r}")
        if self.constants not in CONSTANTS:
            raise ValueError(f"constants must be one of {CONSTANTS}, got {self.constants!r}")
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
    rows = read_benchmark(args.benchmark or wide_benchmark())
    histograms = read_histograms(args.output_lengths or default_histograms_for(rows))

    def prompts(row: BenchmarkRow, oracle: Oracle) -> PromptLengths:
        if args.prompt_mean is not None and args.prompt_sigma is not None:
            return PromptLengths(args.prompt_kind, args.prompt_mean, args.prompt_sigma)
        base = task_prompts(row, oracle)
        return PromptLengths(
            args.prompt_kind,
            base.mean_tokens if args.prompt_mean is None else args.prompt_mean,
            base.sigma if args.prompt_sigma is None else args.prompt_sigma,
        )

    start = time.perf_counter()
    df = validate(
        rows,
        histograms,
        prompts,
        seed=args.seed,
        progress=args.progress,
        scheduler=args.scheduler,
        family=args.constants == "family",
        prefix_caching=args.prefix_caching,
    )
    wall = time.perf_counter() - start
    df = df.join(neighbour_scatter(df))
    print(format_rows(df))
    print(format_errors(df))
    print(f"replayed {len(df)} of {len(rows)} rows in {wall:.1f} s ({wall / max(len(df), 1):.2f} s per row)")
    if len(df) < len(rows):
        print(f"skipped {len(rows) - len(df)} rows (the reasons are logged above)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / "validation.csv", index=False)
    print(f"wrote {out / 'validation.csv'}")
    if args.prefill:
        _prefill_section(out)
    if args.plot and not df.empty:
        print(f"wrote {plot_validation(df, out / 'validation.png')}")
    return df


def _prefill_section(out: Path) -> None:
    """Print the prefill comparisons (`sim.validation.prefill`, `sim.validation.layers`) and write
    DIR/prefill.csv and DIR/layers.csv."""
    from sim.validation import layers, prefill

    print("\nprefill: Splitwise's measured prompt times (Llama-2-70B, H100, TP 2-8) against the simulator")
    split = prefill.report(out, rows=False)
    print("\nprefill: LLMServingSim's measured H100 kernels (Llama-3.1-8B, 70B), carried over, against the simulator")
    both = prefill.agreement(split, layers.report(out, rows=False))
    print(
        "\nprefill: the two measured sets on the same work (a 70B Llama prompt at batch 1 on H100s): Splitwise's "
        f"prompt time is {both['ratio'].min():.2f}-{both['ratio'].max():.2f}x LLMServingSim's kernels + all-reduce "
        "+ overhead, so no one set of constants matches both; the simulator is fitted on the kernels (vLLM's model "
        "code, which the ML.ENERGY runs served)"
    )
    print(both.round(2).to_string(index=False))


def default_histograms_for(rows: Sequence[BenchmarkRow]) -> Path:
    """The shipped histograms of a table's format: the wide ones (keyed by config_id) for a wide
    table, the LM Arena chat ones (keyed by model, GPU and cap) for an old-format one."""
    return wide_histograms() if any(r.config_id is not None for r in rows) else default_histograms()


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

"""Fit each benchmark task's prompt lengths by replaying its H100 rows, and write task_prompts.csv.

    python -m sim.validation.prompts [out=FILE] [seed=0] [every=1] [progress=true]

The ML.ENERGY runs do not publish their prompt lengths. LM Arena chat's are the ones the oracles'
hardware constants were calibrated with (`sim.validation.calibrate`, in each oracle's provenance),
so that task is not refitted: its line says so and gives the score of those prompts. For GPQA and
Sourcegraph FIM, lognormal prompts of σ = `SIGMA` are tried at the means of `MEANS` (a geometric
grid): every H100 row of the task that has an oracle (its model on its layout with the H100
family's constants: a measured configuration's refined oracle is fitted given these prompts, so it
does not choose them) is replayed with the `vllm` engine, and the mean kept is the
one with the least mean absolute error of average batch, output throughput and median ITL (the mean
of the three metrics' mean absolute errors, over the rows replayed at every grid point). Energy per
token and power are left out on purpose: they are what `sim.validate` validates, and fitting the
prompts to them would hide the energy model's errors in the prompt length.

Caveat: the fitted mean is a fitted quantity, not a measurement. It absorbs whatever the engine and
step-cost models get wrong on these rows (prefill cost, KV pressure, a reasoning model's long
outputs), one value per task for every model; only its order of magnitude should be trusted.
`every=2` replays every other cap of each configuration (half the time). Writes FILE (default: the
shipped oracle/data/task_prompts.csv, which `sim.validate` reads).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sim.console.notices import show_warnings_once
from sim.validation.compare import mean_abs_error, validate
from sim.validation.row_setup import default_prompts, unresolved_reason
from sim.validation.table import (
    BenchmarkRow,
    HistKey,
    OutputHistogram,
    read_benchmark,
    read_histograms,
    wide_benchmark,
    wide_histograms,
)
from sim.validation.workload import TASK_PROMPTS_COLUMNS, PromptLengths, task_prompts_file

PROG = "sim.validation.prompts"
SIGMA = 0.5  # log-space spread of the fitted lognormal prompts
MEANS = tuple(float(m) for m in np.round(np.geomspace(50.0, 4000.0, 12)))  # prompt means tried (tokens)
FIT_METRICS = ("batch", "throughput", "itl_median")  # energy and power are what gets validated
REFERENCE = "H100"  # the GPU whose rows choose the prompts (the calibration GPU)
CALIBRATED_TASK = "lm-arena-chat"  # its prompts are the oracles' calibration prompts
FITTED_TASKS = ("gpqa", "sourcegraph-fim")


def score(df: pd.DataFrame) -> float:
    """Mean over `FIT_METRICS` of each metric's mean absolute error (%) over the rows of `df`."""
    if df.empty:
        return float("nan")
    return float(mean_abs_error(df)[list(FIT_METRICS)].to_numpy().mean())


def reference_rows(rows: list[BenchmarkRow], task: str, every: int = 1) -> list[BenchmarkRow]:
    """The `REFERENCE` GPU's rows of `task` that have an oracle; with `every` > 1 only every
    `every`-th cap (lowest first) of each configuration (model, GPUs, expert parallel, precision)."""
    keep = [r for r in rows if r.task == task and r.gpu_model == REFERENCE and unresolved_reason(r) is None]
    if every <= 1:
        return keep
    groups: dict[tuple[object, ...], list[BenchmarkRow]] = {}
    for r in keep:
        groups.setdefault((r.model_id, r.num_gpus, r.expert_parallel, r.data_parallel), []).append(r)
    chosen = {id(r) for g in groups.values() for r in sorted(g, key=lambda r: r.max_num_seqs)[::every]}
    return [r for r in keep if id(r) in chosen]


def fit_task(
    rows: list[BenchmarkRow],
    hists: Mapping[HistKey, OutputHistogram],
    *,
    seed: int = 0,
    progress: bool = True,
) -> tuple[float, float, int, pd.DataFrame]:
    """(best mean, its score %, rows scored, scores per mean) over `MEANS` for one task's rows;
    rows are scored only where every grid point replayed them (a run with no steady-state window
    at some mean drops out of all)."""
    from sim.console.progress import progress_bar

    frames = {}
    for mean in progress_bar(progress, iterable=MEANS, desc=f"prompt means ({len(rows)} rows)", leave=False):
        frames[mean] = validate(
            rows, hists, PromptLengths("lognormal", mean, SIGMA), seed=seed, log=lambda _: None, family=True
        )
    common = set.intersection(*(set(df["config_id"].astype(str)) for df in frames.values()))
    scores = pd.Series({m: score(df[df["config_id"].astype(str).isin(common)]) for m, df in frames.items()})
    best = float(scores.idxmin())
    return best, float(scores[best]), len(common), scores.rename("score_pct").rename_axis("prompt_mean_tokens")


def fit(seed: int = 0, every: int = 1, progress: bool = True) -> pd.DataFrame:
    """task_prompts.csv's table: LM Arena chat scored with the oracles' calibration prompts, the
    `FITTED_TASKS` fitted on their `REFERENCE` rows of the shipped wide table."""
    rows, hists = read_benchmark(wide_benchmark()), read_histograms(wide_histograms())
    lines = []
    arena = reference_rows(rows, CALIBRATED_TASK, every)
    df = validate(arena, hists, lambda row, oracle: default_prompts(oracle), seed=seed, log=lambda _: None, family=True)
    lines.append(
        {
            "task": CALIBRATED_TASK,
            "prompt_mean_tokens": float("nan"),
            "prompt_sigma": float("nan"),
            "rows_used": len(df),
            "score_pct": score(df),
            "how": "the oracles' calibration prompts: each oracle's calibration_prompt_tokens and "
            "calibration_prompt_sigma (the lognormal sim.validation.calibrate replays LM Arena chat with, "
            "chosen by the former prompt grid on the H100 one-GPU rows); "
            f"not refitted here, score over the {REFERENCE} rows",
        }
    )
    print(
        f"{CALIBRATED_TASK}: the oracles' calibration prompts score {score(df):.2f} % over {len(df)} {REFERENCE} rows"
    )
    for task in FITTED_TASKS:
        ref = reference_rows(rows, task, every)
        if not ref:
            print(f"{task}: no {REFERENCE} rows with an oracle; not fitted")
            continue
        best, s, used, scores = fit_task(ref, hists, seed=seed, progress=progress)
        sub = "" if every <= 1 else f", every {every}th cap of each configuration"
        lines.append(
            {
                "task": task,
                "prompt_mean_tokens": best,
                "prompt_sigma": SIGMA,
                "rows_used": used,
                "score_pct": s,
                "how": f"fitted: lognormal σ {SIGMA}, mean from a geometric grid of {len(MEANS)} points "
                f"{MEANS[0]:.0f}-{MEANS[-1]:.0f} tokens; least mean absolute error of batch, throughput and "
                f"median ITL (energy left out: it is what is validated) over the {REFERENCE} rows replayed "
                f"with the shipped oracles{sub}, seed {seed}",
            }
        )
        table = scores.to_frame().T.to_string(float_format=lambda v: f"{v:.1f}", index=False)
        print(f"{task}: mean {best:.0f} tokens (σ {SIGMA}) scores {s:.2f} % over {used} {REFERENCE} rows\n{table}")
    return pd.DataFrame(lines, columns=list(TASK_PROMPTS_COLUMNS))


def parse_args(argv: Sequence[str]) -> tuple[Path, int, int, bool]:
    """`out=FILE seed=N every=K progress=true|false` into (out, seed, every, progress)."""
    args: dict[str, str] = {}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in ("out", "seed", "every", "progress"):
            raise ValueError(f"arguments are out=FILE, seed=N, every=K, progress=true|false; got {a!r}")
        args[key] = value
    for key in ("seed", "every"):
        if key in args and not args[key].isdigit():
            raise ValueError(f"{key} must be a whole number, got {args[key]!r}")
    if int(args.get("every", "1")) < 1:
        raise ValueError("every must be ≥ 1")
    if args.get("progress", "true") not in ("true", "false"):
        raise ValueError(f"progress must be true or false, got {args['progress']!r}")
    out = Path(args["out"]) if "out" in args else task_prompts_file()
    return out, int(args.get("seed", "0")), int(args.get("every", "1")), args.get("progress", "true") == "true"


def main(argv: Sequence[str] | None = None) -> int:
    show_warnings_once()
    try:
        out, seed, every, progress = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    df = fit(seed, every, progress)
    df.to_csv(out, index=False, float_format="%.6g")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

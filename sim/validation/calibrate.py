"""Replay every run of the wide ML.ENERGY table and record what `oracle.hwcal` fits the hardware
constants on.

    python -m sim.validation.calibrate [out=FILE] [seed=0] [progress=true]

Every row with an oracle (`sim.validation.row_setup.row_oracle`: its model on its replica layout) is
replayed through the `vllm` engine (all requests at t = 0,
outputs from the run's histogram, prompts of its task: `sim.validation.row_setup.task_prompts`,
resent prompts hitting the prefix cache as the benchmark's vLLM let them: `sim.validation.workload`),
and its steady-state window's step features per output token, the expected shares of routed experts
its steps read, the same for its median-ITL step, and the window's prompt tokens below each knee
of `oracle.overlap.KNEES` per output token (the prefill overlap's sums) are written (default
`oracle/data/mlenergy_v3_llm_replay_features.csv`) for `python -m oracle.build`. The engine's
step sequence does not depend on the hardware constants (every request is sent at t = 0), so the
features are replayed once (with each GPU family's constants, not a measured configuration's refined
ones: the median-ITL step is picked by step time, and the family fit reads it). Prompt lengths are
not published: LM Arena's are the lognormal the former prompt grid chose on the H100 one-GPU rows
(mean 350 tokens, σ 0.5, recorded in every oracle's provenance); GPQA's and Sourcegraph FIM's are
fitted by `python -m sim.validation.prompts`.
"""

from __future__ import annotations

import functools
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from oracle import hwcal
from oracle.overlap import KNEE_COLUMNS
from sim.console.notices import show_warnings_once
from sim.validation.replay import replays
from sim.validation.table import read_benchmark, read_histograms, wide_benchmark, wide_histograms

COLUMNS = [
    *hwcal.KEY,
    "model_id",
    "gpu_model",
    "num_gpus",
    "expert_parallel",
    "max_num_seqs",
    "prompt_mean_tokens",
    "prompt_sigma",
    *hwcal.X_COLUMNS,
    *hwcal.M_COLUMNS,
    hwcal.X_EXPERTS,
    hwcal.M_EXPERTS,
    "sim_batch",
    *KNEE_COLUMNS,
]


def replay_features(seed: int = 0, progress: bool = True, only: set[str] | None = None) -> pd.DataFrame:
    """One line per replayable row of the shipped wide table (or of its `only` config_ids): its
    key and layout, the prompts it was replayed with, its window features per output token and
    its median-ITL step's."""
    rows, hists = read_benchmark(wide_benchmark()), read_histograms(wide_histograms())
    rows = [r for r in rows if only is None or r.config_id in only]
    lines = []
    log = functools.partial(print, file=sys.stderr)
    runs = replays(rows, hists, seed=seed, progress=progress, log=log, record_features=True, family=True)
    for row, _, prompts, r in runs:
        if r.features_per_token is None or r.median_step_features is None or r.prompt_knees is None:
            continue
        lines.append(
            {
                "config_id": row.config_id,
                "model_id": row.model_id,
                "gpu_model": row.gpu_model,
                "num_gpus": row.num_gpus,
                "expert_parallel": row.expert_parallel,
                "max_num_seqs": row.max_num_seqs,
                "prompt_mean_tokens": prompts.mean_tokens,
                "prompt_sigma": prompts.sigma,
                **dict(zip(hwcal.X_COLUMNS, r.features_per_token.tolist(), strict=True)),
                **dict(zip(hwcal.M_COLUMNS, np.asarray(r.median_step_features).tolist(), strict=True)),
                hwcal.X_EXPERTS: r.experts_per_token,
                hwcal.M_EXPERTS: r.median_step_experts,
                "sim_batch": r.metrics.batch,
                **dict(zip(KNEE_COLUMNS, np.asarray(r.prompt_knees).tolist(), strict=True)),
            }
        )
    return pd.DataFrame(lines, columns=COLUMNS)


def parse_args(argv: list[str]) -> tuple[Path, int, bool]:
    """`out=FILE seed=N progress=true|false` into (out, seed, progress); anything else is an error."""
    args: dict[str, str] = {}
    for a in argv:
        key, sep, value = a.partition("=")
        if not sep or key not in ("out", "seed", "progress"):
            raise ValueError(f"arguments are out=FILE, seed=N, progress=true|false; got {a!r}")
        args[key] = value
    if not args.get("seed", "0").isdigit():
        raise ValueError(f"seed must be a whole number ≥ 0, got {args['seed']!r}")
    if args.get("progress", "true") not in ("true", "false"):
        raise ValueError(f"progress must be true or false, got {args['progress']!r}")
    default = Path(str(resources.files("oracle").joinpath(hwcal.REPLAY_FILE)))
    return Path(args.get("out", default)), int(args.get("seed", "0")), args.get("progress", "true") == "true"


def main(argv: list[str] | None = None) -> int:
    show_warnings_once()
    try:
        out, seed, progress = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"sim.validation.calibrate: error: {e}", file=sys.stderr)
        return 2
    df = replay_features(seed, progress)
    df.to_csv(out, index=False, float_format="%.10g")
    print(f"wrote {len(df)} rows to {out}; now run python -m oracle.build")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

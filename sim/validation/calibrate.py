"""Fit the benchmark's prompt lengths and the hardware constants so that replaying it reproduces it.

    python -m sim.validation.calibrate [out=FILE] [seed=0] [progress=true]

The ML.ENERGY runs do not publish their prompt lengths. A grid of lognormal
prompt-length distributions (mean, σ) is tried: every row is replayed through the `vllm` engine
(all requests at t = 0, outputs from the run's histogram), its steady-state window's step
features per output token (and those of its median-ITL step) are recorded, and
`oracle.hwcal.fit_constants` fits the hardware constants to the measured time and energy per
output token and median ITL. The distribution kept is the one with the least mean absolute error
over throughput, energy per output token, median ITL and average batch (the
batch reveals KV use: at the highest caps it falls short of `max_num_seqs` only if the prompts
are long enough), on the H100 rows; every run sent the same prompts, so the B200 rows are replayed
with the same distribution (several B200 rows are irregular: see the README). The kept features
are written for `python -m oracle.build` (default `oracle/data/mlenergy_v3_replay_features.csv`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from oracle import arch, features, hwcal
from sim.notices import show_warnings_once
from sim.validation.replay import oracle_name, replay_row, shipped_oracle
from sim.validation.table import (
    BenchmarkRow,
    OutputHistogram,
    default_benchmark,
    default_histograms,
    read_benchmark,
    read_histograms,
)
from sim.validation.workload import PromptLengths

MEANS = tuple(float(m) for m in range(150, 951, 50))  # prompt means tried (tokens)
SIGMAS = (0.5, 1.0, 1.5)  # log-space spreads tried
REFERENCE = "H100"  # the GPU whose rows choose the prompt lengths (its measurements are the cleanest)


def replay_features(
    rows: list[BenchmarkRow], hists: Mapping[tuple[str, str, int], OutputHistogram], prompts: PromptLengths, seed: int
) -> pd.DataFrame:
    """One line per row: key, measured targets, window features per output token, simulated batch."""
    lines = []
    for row in rows:
        oracle = shipped_oracle(str(oracle_name(row.model_id, row.gpu_model)))
        r = replay_row(row, oracle, prompts, histogram=hists[row.key], seed=seed, record_features=True)
        assert r.features_per_token is not None
        lines.append(
            {
                "model_id": row.model_id,
                "gpu_model": row.gpu_model,
                "max_num_seqs": row.max_num_seqs,
                "prompt_mean_tokens": prompts.mean_tokens,
                "prompt_sigma": prompts.sigma,
                **dict(zip(hwcal.X_COLUMNS, r.features_per_token.tolist(), strict=True)),
                **dict(zip(hwcal.M_COLUMNS, np.asarray(r.median_step_features).tolist(), strict=True)),
                "sim_batch": r.metrics.batch,
                "batch": row.measured.batch,
                "time_per_token_s": 1.0 / row.measured.throughput,
                "energy_per_token_joules": row.measured.energy_per_token,
                "itl_median_s": row.measured.itl_median / 1e3,
            }
        )
    return pd.DataFrame(lines)


def score(df: pd.DataFrame, gpu: arch.GpuSpec) -> float:
    """Mean absolute error (%) of time and energy per output token and of the median ITL after
    fitting constants, plus that of the average batch."""
    k, t_pred, e_pred = hwcal.fit_constants(df, gpu, df[hwcal.X_COLUMNS].to_numpy())
    itl = hwcal.predicted_time_s(df, gpu, k, hwcal.M_COLUMNS)
    err = [
        np.abs(t_pred / df["time_per_token_s"] - 1.0),
        np.abs(e_pred / df["energy_per_token_joules"] - 1.0),
        np.abs(itl / df["itl_median_s"] - 1.0),
        np.abs(df["sim_batch"] / df["batch"] - 1.0),
    ]
    return float(sum(np.mean(e) for e in err) * 100.0)


def calibrate(seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """Features of every replayable row of the shipped table at the prompt lengths that score best
    on the `REFERENCE` GPU's rows; every GPU's runs sent the same 1024 prompts, so the others reuse them."""
    from sim.progress import progress_bar

    rows, hists = read_benchmark(default_benchmark()), read_histograms(default_histograms())
    rows = [r for r in rows if r.key in hists and oracle_name(r.model_id, r.gpu_model) is not None]
    ref = [r for r in rows if r.gpu_model == REFERENCE]
    gpu = arch.load_gpu(REFERENCE.lower())
    best: tuple[float, PromptLengths] | None = None
    for mean, sigma in progress_bar(progress, iterable=[(m, s) for s in SIGMAS for m in MEANS], desc="prompt grid"):
        prompts = PromptLengths("lognormal", mean, sigma)
        s = score(replay_features(ref, hists, prompts, seed), gpu)
        if best is None or s < best[0]:
            best = (s, prompts)
    assert best is not None
    prompts = best[1]
    print(f"lognormal prompts of mean {prompts.mean_tokens:.0f} tokens, σ {prompts.sigma:.2f}")
    out = []
    for label in sorted({r.gpu_model for r in rows}):
        df = replay_features([r for r in rows if r.gpu_model == label], hists, prompts, seed)
        print(
            f"  {label}: {score(df, arch.load_gpu(label.lower())):.2f} % (mean absolute error of time per token "
            "+ energy per token + median ITL + batch)"
        )
        out.append(df)
    return pd.concat(out, ignore_index=True)


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
    df = calibrate(seed, progress)
    keep = [*hwcal.KEY, "prompt_mean_tokens", "prompt_sigma", *hwcal.X_COLUMNS, *hwcal.M_COLUMNS, "sim_batch"]
    df[keep].to_csv(out, index=False, float_format="%.10g")
    print(f"wrote {out}; now run python -m oracle.build")
    return 0


assert len(hwcal.X_COLUMNS) == features.N_FEATURES

if __name__ == "__main__":
    raise SystemExit(main())

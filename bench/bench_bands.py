"""The bands' cost: documented commands timed whole, with their replays and without, interleaved.

    python bench/bench_bands.py [--repeat 3] [--samples 64]

Each repeat runs, in turn, every command of `COMMANDS` twice in a fresh subprocess: with
`uncertainty.samples=N` (the bands' replays) and with `uncertainty.samples=0` (none); tracking
and plots off, which time MLflow and matplotlib, not the bands. It prints the min and median
wall time (s) of each, and what the replays add. #26's target: the capacity search with bands on
azure_chat at 20× its rate in under a minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "default (azure_chat, policy=none)": [],
    "adaptive_gen against its baseline": ["policy=adaptive_gen"],
    "capacity search at 20x (README's planning answer)": [
        "capacity.enabled=true",
        "trace.rate_scale=20",
        "policy=adaptive_gen",
        "policy.factor=0.3",
    ],  # fmt: skip
}
QUIET = ["tracking.enabled=false", "plots=false", "progress=false", "background=false"]


def wall_s(overrides: list[str], folder: Path) -> float:
    """Whole-process wall time (s) of `python -m sim OVERRIDES` writing into `folder`."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "sim", *overrides, *QUIET, f"output_dir={folder}"],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"python -m sim {' '.join(overrides)} exited {proc.returncode}: {proc.stderr[-500:]}")
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--samples", type=int, default=64, help="uncertainty.samples of the runs with bands")
    args = p.parse_args()
    runs: dict[tuple[str, int], list[float]] = {(c, n): [] for c in COMMANDS for n in (args.samples, 0)}
    with tempfile.TemporaryDirectory(prefix="bench-bands-") as tmp:
        for k in range(args.repeat):
            for (name, samples), times in runs.items():
                folder = Path(tmp, f"{k}-{len(times)}-{samples}-{abs(hash(name))}")
                times.append(wall_s([*COMMANDS[name], f"uncertainty.samples={samples}"], folder))
    print(f"{args.repeat} interleaved repeats, {os.cpu_count()} CPUs; whole process, min / median (s)")
    for name in COMMANDS:
        with_bands, without = runs[(name, args.samples)], runs[(name, 0)]
        added = statistics.median(with_bands) - statistics.median(without)
        print(f"{name}: {args.samples} replays {min(with_bands):.2f} / {statistics.median(with_bands):.2f}; "
              f"none {min(without):.2f} / {statistics.median(without):.2f}; the replays add {added:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

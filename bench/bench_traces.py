"""Benchmark trace loading: speed on 1M BurstGPT-format rows, memory per row, 27M-row estimate.

Run: python bench/bench_traces.py [--rows 1000000]. Files are generated in a temp dir (the data
are random but in the real column layouts); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

import traces
from traces.loader import read_cache, write_cache
from traces.parse import parse_file

ROWS_27M = 27_303_999  # AzureLLMInferenceTrace_conv_1week.csv
# VmHWM (Linux) is the peak RSS of this process image; ru_maxrss would carry the parent's over exec
_RSS_SNIPPET = """
import sys, traces
def hwm():
    lines = open("/proc/self/status").read().splitlines()
    return next(int(x.split()[1]) for x in lines if x.startswith("VmHWM")) * 1024
base = hwm()
df = traces.load(sys.argv[1])
print((hwm() - base) / len(df))
"""


def write_burstgpt(path: Path, n: int, rng: np.random.Generator) -> None:
    """n rows in the BurstGPT column layout, integer seconds over ~61 days, ~2% failures."""
    t = np.sort(rng.integers(0, 61 * 86_400, n))
    req = rng.integers(1, 4000, n)
    resp = np.where(rng.random(n) < 0.02, 0, rng.integers(1, 1000, n))
    pd.DataFrame(
        {
            "Timestamp": t,
            "Model": rng.choice(["ChatGPT", "GPT-4"], n),
            "Request tokens": req,
            "Response tokens": resp,
            "Total tokens": req + resp,
            "Log Type": rng.choice(["Conversation log", "API log"], n),
        }
    ).to_csv(path, index=False)


def write_azure_2024(path: Path, n: int, rng: np.random.Generator) -> None:
    """n rows like the 2024 Azure files: '+00:00' offsets, some without fractional seconds."""
    us = np.sort(rng.integers(0, 7 * 86_400 * 10**6, n))
    whole = rng.random(n) < 0.1
    us[whole] = us[whole] // 10**6 * 10**6
    stamps = (np.datetime64("2024-05-10T00:00:00", "us") + us).astype(str)
    stamps = np.char.replace(np.char.replace(stamps, "T", " "), ".000000", "")
    stamps = np.char.add(stamps, "+00:00")
    pd.DataFrame(
        {"TIMESTAMP": stamps, "ContextTokens": rng.integers(1, 8000, n), "GeneratedTokens": rng.integers(1, 1000, n)}
    ).to_csv(path, index=False)


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_speed(tmp: Path, n: int, rng: np.random.Generator) -> None:
    path = tmp / "BurstGPT_bench.csv"
    write_burstgpt(path, n, rng)
    seconds = best_of(lambda: traces.load(path))
    print(
        f"BurstGPT format, {n:,} rows ({path.stat().st_size / 1e6:.0f} MB CSV): "
        f"load {seconds:.2f} s = {n / seconds / 1e6:.2f} M rows/s"
    )
    cache = tmp / "BurstGPT_bench.parquet"
    write_cache(parse_file(path), cache)
    seconds = best_of(lambda: read_cache(cache))
    print(
        f"  Parquet cache ({cache.stat().st_size / 1e6:.0f} MB): read {seconds:.2f} s "
        f"= {n / seconds / 1e6:.1f} M rows/s"
    )


def bench_memory(tmp: Path, n: int, rng: np.random.Generator) -> None:
    path = tmp / "azure_2024_bench.csv"
    write_azure_2024(path, n, rng)
    pool = pa.default_memory_pool()
    arrow_before = pool.max_memory()
    tracemalloc.start()
    start = time.perf_counter()
    df = traces.load(path)
    seconds = time.perf_counter() - start
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    arrow_peak = pool.max_memory() - arrow_before
    per_row = df.memory_usage(deep=True).sum() / len(df)
    peak_per_row = (py_peak + arrow_peak) / len(df)
    print(
        f"Azure 2024 format, {n:,} rows ({path.stat().st_size / 1e6:.0f} MB CSV): "
        f"load {seconds:.2f} s = {n / seconds / 1e6:.2f} M rows/s"
    )
    print(
        f"  result {per_row:.1f} B/row; parse peak {peak_per_row:.0f} B/row "
        f"(numpy/pandas {py_peak / 1e6:.0f} MB via tracemalloc + Arrow pool "
        f"{arrow_peak / 1e6:.0f} MB)"
    )
    print(
        f"  estimate for {ROWS_27M:,} rows: result {per_row * ROWS_27M / 2**30:.2f} GiB, "
        f"parse peak {peak_per_row * ROWS_27M / 2**30:.2f} GiB"
    )
    rss = float(
        subprocess.run(
            [sys.executable, "-c", _RSS_SNIPPET, str(path)], check=True, capture_output=True, text=True
        ).stdout
    )
    print(
        f"  fresh process, peak-RSS growth while loading: {rss:.0f} B/row -> "
        f"{rss * ROWS_27M / 2**30:.2f} GiB for {ROWS_27M:,} rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        bench_memory(Path(tmp), args.rows, rng)  # first: the Arrow pool's peak is cumulative
        bench_speed(Path(tmp), args.rows, rng)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"max RSS of this process: {rss_mb:.0f} MB")


if __name__ == "__main__":
    main()

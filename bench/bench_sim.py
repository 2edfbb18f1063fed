"""Simulator speed: requests per second on azure_chat, and a 1,000,000-request synthetic trace.

    python bench/bench_sim.py [--requests 1000000] [--rate 10] [--repeat 3]

Times the simulation loop only (`SimResult.wall_s`: the SimPy run, not the interpreter start-up,
the trace load, shaping, records or MLflow) and also the whole `simulate` call. Peak memory is
the process's peak resident set size (interpreter and libraries included).
Targets: ≥ 20,000 simulated requests/s on azure_chat; 1M requests in < 60 s and < 2 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings

import traces
from oracle.model import Oracle, OracleRangeWarning
from sim.config import ServerConfig
from sim.run import simulate


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def bench(label: str, requests, oracle: Oracle, repeat: int, scheduler: str = "vllm") -> None:
    best_loop, best_call = float("inf"), float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = simulate(requests, oracle, ServerConfig(scheduler=scheduler))
        best_call = min(best_call, time.perf_counter() - start)
        best_loop = min(best_loop, result.wall_s)
    n = len(requests)
    done = int(result.requests["completed"].sum())
    print(
        f"{label}: {n:,} requests ({done:,} completed, {result.makespan_s:,.0f} simulated s): "
        f"loop {best_loop:.2f} s = {n / best_loop:,.0f} req/s; "
        f"simulate() {best_call:.2f} s = {n / best_call:,.0f} req/s; "
        f"peak RSS {peak_rss_mb():,.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", default="llama-3.1-8b_h100")
    parser.add_argument("--requests", type=int, default=1_000_000, help="synthetic trace size")
    parser.add_argument("--rate", type=float, default=10.0, help="synthetic arrivals per s")
    parser.add_argument("--repeat", type=int, default=3, help="azure_chat repetitions (best kept)")
    parser.add_argument("--scheduler", default="vllm", help="engine model (server.scheduler)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", OracleRangeWarning)
    oracle = Oracle.load(args.oracle)
    bench("azure_chat", traces.load("azure_chat"), oracle, args.repeat, args.scheduler)
    start = time.perf_counter()
    synthetic = traces.load("synthetic", num_requests=args.requests, rate_per_s=args.rate, seed=0)
    print(f"synthetic trace of {args.requests:,} requests generated in {time.perf_counter() - start:.1f} s")
    bench(f"synthetic {args.rate:g}/s", synthetic, oracle, 1, args.scheduler)


if __name__ == "__main__":
    main()

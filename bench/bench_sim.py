"""Simulator loop speed: azure_chat, mooncake_conversation with the prefix cache on and off, and a
synthetic trace fully busy and at a fraction of capacity.

    python bench/bench_sim.py [--requests 1000000] [--busy 0.7] [--repeat 3] [--rate R] [--no-azure] [--no-mooncake]

Times the simulation loop (`SimResult.wall_s`: the SimPy run, not the interpreter start-up, the
trace load, shaping, records or MLflow) and the whole `simulate` call, and prints the min and
median over `--repeat` repeats, the configurations interleaved (one of each per round).

- fully busy: every request arrives within the first second (1e6 requests/s), so the server runs
  full batches from start to end;
- busy fraction: Poisson arrivals at `--busy` × the server's capacity, the capacity being the
  completed requests per simulated second of the fully busy run (measured in the first round;
  `--rate` sets the rate instead). 70 % busy is 70 % of the throughput the server can sustain.

Peak memory is the process's peak resident set size (interpreter and libraries included). The
compiled kernel (`sim.kernel`) is loaded from its cache (or compiled) by a first small simulation,
timed and printed apart.
Targets (issue 12): ≥ 150,000 requests/s at 70 % busy and ≥ 200,000 fully busy on 1M requests;
(issue 23) the Mooncake replay with the prefix cache at ≥ 50 % of the speed without it.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field

import pandas as pd

import traces
from oracle.model import Oracle, OracleRangeWarning
from sim.config import ServerConfig
from sim.serving.run import SimResult, simulate

SATURATED_RATE = 1e6  # arrivals per s: a million requests arrive within a second


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


@dataclass
class Case:
    """One configuration and its timings (s) over the repeats."""

    label: str
    requests: pd.DataFrame
    config: ServerConfig | None = None  # None: the command's
    loop_s: list[float] = field(default_factory=list)
    call_s: list[float] = field(default_factory=list)
    last: SimResult | None = None

    def run(self, oracle: Oracle, config: ServerConfig) -> SimResult:
        start = time.perf_counter()
        result = simulate(self.requests, oracle, self.config or config)
        self.call_s.append(time.perf_counter() - start)
        self.loop_s.append(result.wall_s)
        self.last = result
        return result

    def report(self) -> str:
        n = len(self.requests)
        assert self.last is not None
        done = int(self.last.requests["completed"].sum())
        lo, med = min(self.loop_s), statistics.median(self.loop_s)
        call_lo, call_med = min(self.call_s), statistics.median(self.call_s)
        return (
            f"{self.label}: {n:,} requests ({done:,} completed, {self.last.makespan_s:,.0f} simulated s), "
            f"{len(self.loop_s)} repeats: loop min {lo:.2f} s = {n / lo:,.0f} req/s, "
            f"median {med:.2f} s = {n / med:,.0f} req/s; simulate() min {call_lo:.2f} s = {n / call_lo:,.0f} req/s, "
            f"median {call_med:.2f} s = {n / call_med:,.0f} req/s"
        )


def capacity_per_s(result: SimResult) -> float:
    """Completed requests per simulated second of a fully busy run."""
    return float(result.requests["completed"].sum()) / result.makespan_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", default="llama-3.1-8b_h100")
    parser.add_argument("--requests", type=int, default=1_000_000, help="synthetic trace size")
    parser.add_argument("--busy", type=float, default=0.7, help="arrival rate as a fraction of capacity")
    parser.add_argument("--rate", type=float, default=None, help="arrivals per s (instead of --busy)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (each runs every configuration once)")
    parser.add_argument("--scheduler", default="vllm", help="engine model (server.scheduler)")
    parser.add_argument("--no-azure", action="store_true", help="skip the azure_chat replay")
    parser.add_argument("--no-mooncake", action="store_true", help="skip the mooncake_conversation replays")
    args = parser.parse_args()
    warnings.simplefilter("ignore", OracleRangeWarning)
    oracle = Oracle.load(args.oracle)
    config = ServerConfig(scheduler=args.scheduler)
    cases = [] if args.no_azure else [Case("azure_chat", traces.load("azure_chat"))]
    if not args.no_mooncake:
        mooncake = traces.load("mooncake_conversation")
        for on in (True, False):
            on_off = ServerConfig(scheduler=args.scheduler, prefix_caching=on)
            cases.append(Case(f"mooncake_conversation, prefix cache {'on' if on else 'off'}", mooncake, on_off))
    full = Case("synthetic fully busy", _synthetic(args.requests, SATURATED_RATE))
    cases.append(full)
    start = time.perf_counter()  # the compiled kernel loads (or compiles) once per process: not timed below
    simulate(_synthetic(100, 10.0), oracle, config)
    print(f"kernel loaded in {time.perf_counter() - start:.2f} s (a first simulation of 100 requests)")
    busy: Case | None = None
    for round_ in range(args.repeat):
        for case in list(cases):
            case.run(oracle, config)
        if busy is None:
            assert full.last is not None
            capacity = capacity_per_s(full.last)
            rate = args.rate if args.rate is not None else args.busy * capacity
            print(f"capacity {capacity:.3f} requests/s; synthetic rate {rate:.3f}/s = {rate / capacity:.3f} busy")
            busy = Case(f"synthetic {rate:.3f}/s", _synthetic(args.requests, rate))
            busy.run(oracle, config)
            cases.append(busy)
        print(f"round {round_ + 1} done, peak RSS {peak_rss_mb():,.0f} MB", flush=True)
    for case in cases:
        print(case.report())
    print(f"peak RSS {peak_rss_mb():,.0f} MB")


def _synthetic(n: int, rate: float) -> pd.DataFrame:
    return traces.load("synthetic", num_requests=n, rate_per_s=rate, seed=0)


if __name__ == "__main__":
    main()

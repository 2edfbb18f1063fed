"""Fleet speed: a full day of azure_chat traffic (about 465,000 requests) across a fleet, per router.

    python bench/bench_fleet.py [--hours 24] [--rate-scale 1] [--replicas 4] [--repeat 1]
                                [--routers round_robin,least_tokens,length_aware,energy_aware] [--capacity]

The day is the shipped azure_chat trace (19,366 requests over ~3,502 s) tiled `--hours` times:
copy k is shifted by k × 3600 s (a fixed one-hour period, so each hour ends with ~98 s of quiet),
then all arrival times are divided by `--rate-scale` (> 1: the same requests, heavier load).
Each router serves it on `--replicas` copies of the oracle; `length_aware` needs pools, so it runs
on two pools of `--replicas` / 2 replicas each: "short" (prompts ≤ 2,048 and outputs ≤ 512
tokens) and "long" (the rest). Per router it prints the simulation loop time (`SimResult.wall_s`:
the servers' events only), the whole `simulate_fleet` call (policy shaping, wiring and per-request
records included), simulated requests per second, energy, latency and the process's peak resident
set size so far (interpreter and libraries included). With `--repeat N` the routers take turns N
times (interleaved, so that a noisy machine slows them alike) and a last line per router gives the
min and median of its loop and whole-call rates. `--capacity` also times a capacity search
(least_tokens, p99 TTFT and TPOT within the default SLO) on the same day.
Targets: the whole default run (24 h, 4 routers) in a few minutes on a 2-core machine; per-arrival
routing cost that does not grow with the replica count (compare `--replicas 64 --rate-scale 16`
with `--replicas 256 --rate-scale 64`: the same requests, the same load per replica); a day at
100× across 256 replicas with least_tokens in under a minute
(`--rate-scale 100 --replicas 256 --routers least_tokens`).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import pandas as pd
from bench_sim import peak_rss_mb  # this script's folder is on sys.path when run as a script

import traces
from oracle.model import Oracle, OracleRangeWarning
from sim.config import ServerConfig, SloConfig
from sim.planning.capacity import CapacityConfig, search_capacity
from sim.policies.base import Policy
from sim.results.metrics import summarize
from sim.serving.fleet import Fleet, Pool
from sim.serving.run import simulate_fleet
from traces.tile import tile

PERIOD_S = 3600.0  # one copy of the trace per hour


def day_of_traffic(hours: int, rate_scale: float) -> pd.DataFrame:
    """azure_chat tiled `hours` times, copy k shifted by k × PERIOD_S, arrivals divided by `rate_scale`."""
    day = tile(traces.load("azure_chat"), hours, PERIOD_S)
    return day.assign(arrival_s=day["arrival_s"] / rate_scale)


def make_fleet(oracle: Oracle, router: str, replicas: int, slo: SloConfig) -> Fleet:
    """`replicas` copies of the oracle behind `router`; length_aware splits them into short and long pools."""
    if router != "length_aware":
        return Fleet.single(oracle, ServerConfig(), replicas=replicas, router=router, slo=slo)
    short = max(replicas // 2, 1)
    long = max(replicas - short, 1)
    pools = (
        Pool("short", oracle, ServerConfig(), short, max_input_tokens=2048, max_output_tokens=512),
        Pool("long", oracle, ServerConfig(), long),
    )
    return Fleet(pools, "length_aware", slo)


def bench(
    router: str, requests: pd.DataFrame, oracle: Oracle, replicas: int, slo: SloConfig
) -> tuple[float, float, float]:
    """One run; prints its figures and returns the times (s) of its loop, of the whole call and the
    process's CPU time over the call (steadier than wall time on a shared machine)."""
    fleet = make_fleet(oracle, router, replicas, slo)
    start, cpu = time.perf_counter(), time.process_time()
    result = simulate_fleet(requests, fleet)
    call, cpu = time.perf_counter() - start, time.process_time() - cpu
    s = summarize(result, slo)
    n = len(requests)
    pools = "+".join(f"{p.replicas}" for p in fleet.pools)
    print(
        f"{router} ({pools} replicas): {n:,} requests ({s['completed']:,} completed, "
        f"{result.makespan_s:,.0f} simulated s): loop {result.wall_s:.1f} s = {n / result.wall_s:,.0f} req/s; "
        f"simulate_fleet() {call:.1f} s = {n / call:,.0f} req/s (CPU {cpu:.1f} s = {n / cpu:,.0f} req/s); "
        f"energy {s['energy_j'] / 3.6e6:,.2f} kWh (peak {s['peak_power_w']:,.0f} W); "
        f"p99 TTFT {s['ttft_s']['p99']:.3g} s, p99 TPOT {s['tpot_s']['p99'] * 1e3:.3g} ms, "
        f"SLO attainment {s['slo_attainment']:.1%}; peak RSS {peak_rss_mb():,.0f} MB",
        flush=True,
    )
    return result.wall_s, call, cpu


def bench_capacity(requests: pd.DataFrame, oracle: Oracle, slo: SloConfig) -> None:
    fleet = Fleet.single(oracle, ServerConfig(), replicas=1, router="least_tokens", slo=slo)
    cfg = CapacityConfig(enabled=True)
    start = time.perf_counter()
    capacity, _ = search_capacity(requests, fleet, Policy(), cfg, progress=False)
    wall = time.perf_counter() - start
    tried = ", ".join(
        f"{p.replicas}{'✓' if p.met else '✗'} (p99 TTFT {p.ttft_s:.3g} s, TPOT {p.tpot_s * 1e3:.3g} ms)"
        for p in sorted(capacity.probes, key=lambda p: p.replicas)
    )
    print(
        f"capacity (least_tokens, {cfg.describe(slo)}): {capacity.replicas} replicas, met={capacity.met}, "
        f"energy {capacity.energy_j / 3.6e6:,.2f} kWh; {len(capacity.probes)} probes in {wall:.1f} s "
        f"({wall / len(capacity.probes):.1f} s/probe); peak RSS {peak_rss_mb():,.0f} MB",
        flush=True,
    )
    print(f"  probes: {tried}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", default="llama-3.1-8b_h100")
    parser.add_argument("--hours", type=int, default=24, help="copies of the hour-long azure_chat trace")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="divide arrival times by this (heavier load)")
    parser.add_argument("--replicas", type=int, default=4, help="replicas per fleet (length_aware: split in two)")
    parser.add_argument("--routers", default="round_robin,least_tokens,length_aware,energy_aware")
    parser.add_argument("--repeat", type=int, default=1, help="interleaved runs per router (min and median)")
    parser.add_argument("--capacity", action="store_true", help="also time a capacity search (least_tokens)")
    args = parser.parse_args()
    if args.hours < 1 or args.rate_scale <= 0 or args.replicas < 1 or args.repeat < 1:
        parser.error("--hours, --replicas and --repeat must be ≥ 1 and --rate-scale > 0")
    warnings.simplefilter("ignore", OracleRangeWarning)
    oracle = Oracle.load(args.oracle)
    slo = SloConfig()
    start = time.perf_counter()
    day = day_of_traffic(args.hours, args.rate_scale)
    span = day["arrival_s"].iloc[-1]
    print(
        f"azure_chat × {args.hours} h (period {PERIOD_S:.0f} s, rate × {args.rate_scale:g}): {len(day):,} requests "
        f"over {span:,.0f} s ({len(day) / span:.2f}/s) built in {time.perf_counter() - start:.1f} s",
        flush=True,
    )
    routers = [r.strip() for r in args.routers.split(",")]
    start = time.perf_counter()  # the compiled kernel loads (or compiles) once per process: not timed below
    for router in routers:
        simulate_fleet(day.iloc[:50], make_fleet(oracle, router, min(args.replicas, 4), slo))
    print(f"kernel loaded in {time.perf_counter() - start:.2f} s (a first run of 50 requests per router)")
    total = time.perf_counter()
    times: dict[str, list[tuple[float, float, float]]] = {r: [] for r in routers}
    for _ in range(args.repeat):
        for router in routers:
            times[router].append(bench(router, day, oracle, args.replicas, slo))
    if args.repeat > 1:
        n = len(day)
        for router, runs in times.items():
            parts = []
            for what, k in (("loop", 0), ("simulate_fleet()", 1), ("its CPU", 2)):
                t = [r[k] for r in runs]
                low, mid = min(t), statistics.median(t)
                parts.append(
                    f"{what} min {low:.1f} s ({n / low:,.0f} req/s), median {mid:.1f} s ({n / mid:,.0f} req/s)"
                )
            print(f"{router} over {args.repeat} interleaved runs: " + "; ".join(parts), flush=True)
    if args.capacity:
        bench_capacity(day, oracle, slo)
    print(f"total {time.perf_counter() - total:.1f} s; peak RSS {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()

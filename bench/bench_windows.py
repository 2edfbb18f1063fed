"""One trace split into time windows (`sim.serving.windows.simulate_windows`) against the single-process run:
accuracy of the merge and speed-up with Ray tasks.

    python bench/bench_windows.py [--hours 1] [--rate-scale 1] [--windows 2] [--warmup-s 300]
                                  [--repeats 3] [--replicas 1]

The trace is the shipped azure_chat hour (19,366 requests over 3,502 s) tiled `--hours` times, one
copy per hour as in bench_fleet.py (`--hours 1`: the shipped trace as it is), arrival times divided
by `--rate-scale` (> 1: heavier load, so the servers rarely empty), served on
`--replicas` Llama-3.1-8B / H100 replicas (round robin, default engine). It prints

- accuracy: merged minus single-process, in %, for energy (total, active, idle), the sum of
  per-request energies, and p50/p99 TTFT, TPOT and end-to-end latency;
- speed: the whole call (s), single process vs `simulate_windows(executor='ray')` with one Ray
  task per window on a local Ray (`--windows` CPUs, started once before timing, on 127.0.0.1),
  repeats interleaved, min and median; the Ray start-up time is printed apart;
- the critical path for a cluster with one worker per window: each window simulated alone here
  (`simulate_window`, sequential), the slowest window plus the merge, and the speed-up it implies,
  in wall time and in CPU time of this process (the CPU figures hold on a machine shared with other
  work; the wall figures need an idle one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

import numpy as np
from bench_fleet import day_of_traffic  # this script's folder is on sys.path when run as a script

from oracle.model import Oracle, OracleRangeWarning
from sim.config import ServerConfig, SloConfig
from sim.policies.base import Policy
from sim.results.metrics import summarize
from sim.serving.fleet import Fleet
from sim.serving.run import simulate_fleet
from sim.serving.windows import Part, merge, plan_windows, simulate_window, simulate_windows

LATENCIES = ("ttft_s", "tpot_s", "e2e_s")


def pct(new: float, old: float) -> str:
    return f"{100.0 * (new / old - 1.0):+.4f} %"


def accuracy(one, merged, slo: SloConfig) -> None:
    a, b = summarize(merged, slo), summarize(one, slo)
    print("accuracy, merged vs single process:")
    for key in ("energy_j", "active_energy_j", "idle_energy_j", "makespan_s"):
        print(f"  {key:<24} {b[key]:>16,.1f} -> {a[key]:>16,.1f}  {pct(a[key], b[key])}")
    e1, e2 = one.requests["energy_j"].sum(), merged.requests["energy_j"].sum()
    print(f"  {'sum of request energy_j':<24} {e1:>16,.1f} -> {e2:>16,.1f}  {pct(e2, e1)}")
    for key in LATENCIES:
        for p in ("p50", "p99"):
            print(f"  {key + ' ' + p:<24} {b[key][p]:>16.5f} -> {a[key][p]:>16.5f}  {pct(a[key][p], b[key][p])}")


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def cpu_timed(fn) -> tuple[float, float, object]:
    """Wall and CPU time (s) of this process, and the result."""
    cpu = time.process_time()
    wall, out = timed(fn)
    return wall, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=int, default=1)
    parser.add_argument("--rate-scale", type=float, default=1.0)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--warmup-s", type=float, default=300.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    warnings.simplefilter("ignore", OracleRangeWarning)
    requests = day_of_traffic(args.hours, args.rate_scale)
    fleet = Fleet.single(Oracle.load("llama-3.1-8b_h100"), ServerConfig(), replicas=args.replicas)
    slo, policy = SloConfig(), Policy()
    span = requests["arrival_s"].iloc[-1]
    print(f"{len(requests):,} requests over {span:,.0f} s (rate x{args.rate_scale:g}), {args.replicas} replica(s); "
          f"{args.windows} windows, warm-up and cool-down {args.warmup_s:.0f} s")  # fmt: skip
    kwargs = {"windows": args.windows, "warmup_s": args.warmup_s}

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported: 127.0.0.1
    import ray

    t_init, _ = timed(lambda: ray.init(address="local", _node_ip_address="127.0.0.1", num_cpus=args.windows,
                                       include_dashboard=False, log_to_driver=False))  # fmt: skip
    print(f"Ray start-up (not in the timings below): {t_init:.2f} s")
    simulate_windows(requests.iloc[:2000], fleet, policy, executor="ray", **kwargs)  # workers up, imports done

    times: dict[str, list[float]] = {"single": [], "ray": []}
    single_cpu: list[float] = []
    one = merged = None
    for _ in range(args.repeats):
        t, c, one = cpu_timed(lambda: simulate_fleet(requests, fleet, policy))
        times["single"].append(t)
        single_cpu.append(c)
        t, merged = timed(lambda: simulate_windows(requests, fleet, policy, executor="ray", **kwargs))
        times["ray"].append(t)
    ray.shutdown()
    accuracy(one, merged, slo)
    print(f"speed, whole call, {args.repeats} interleaved repeats:")
    for name, ts in times.items():
        each = " ".join(f"{t:.2f}" for t in ts)
        print(f"  {name:<8} min {min(ts):7.2f} s  median {statistics.median(ts):7.2f} s  (each: {each})")
    best, median = min(times["single"]) / min(times["ray"]), np.median(times["single"]) / np.median(times["ray"])
    print(f"  speed-up with {args.windows} Ray workers: {best:.2f}x (min), {median:.2f}x (median)")
    print(f"  single process CPU: min {min(single_cpu):.2f} s, median {statistics.median(single_cpu):.2f} s")

    plan = plan_windows(requests["arrival_s"].to_numpy(float), args.windows, args.warmup_s, args.warmup_s)
    parts: list[Part] = []
    walls, cpus = [], []
    for w in plan:
        rows = requests.iloc[w.first : w.last].reset_index(drop=True)
        t, c, part = cpu_timed(lambda rows=rows, w=w: simulate_window(rows, fleet, policy, w))
        assert isinstance(part, Part)
        parts.append(part)
        walls.append(t)
        cpus.append(c)
        print(f"  window {w.index}: {w.stop - w.owned:,} owned + {(w.last - w.first) - (w.stop - w.owned):,} "
              f"overlap requests, alone {t:.2f} s wall, {c:.2f} s CPU")  # fmt: skip
    t_merge, c_merge, _ = cpu_timed(lambda: merge(parts, policy.name, float(span), 0.0))
    wall_path, cpu_path = max(walls) + t_merge, max(cpus) + c_merge
    print(f"  merge {t_merge:.3f} s; cluster critical path (slowest window + merge): {wall_path:.2f} s wall, "
          f"{cpu_path:.2f} s CPU: {min(times['single']) / wall_path:.2f}x (wall), "
          f"{min(single_cpu) / cpu_path:.2f}x (CPU) over one process, before task dispatch and transfer")  # fmt: skip


if __name__ == "__main__":
    main()

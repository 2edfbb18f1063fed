"""Peak memory per request beyond the loaded trace: what a long replay costs in one process.

    python bench/bench_memory.py [--sizes 1000000 3000000] [--rate 10] [--repeat 3]

Each (size, repeat) runs in a fresh subprocess, interleaved across sizes, so peaks never mix. The
child generates a synthetic trace, then resets the kernel's peak-RSS mark (Linux
/proc/self/clear_refs), notes its resident set size, and does what the main command does with the
records: simulate on one server with the per-request records written to a Parquet file, then the
run summary. It prints peak RSS minus the RSS after loading the trace, divided by the request
count (bytes per request), with the loop's speed and the busy share. A first run of 100 requests,
before the mark is reset, loads the compiled kernel (numba and LLVM: a fixed cost per process,
in "RSS after the trace"). Target: ≤ 100 B per request.
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_kb(key: str) -> int:
    """A memory figure of this process from /proc/self/status (kB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def child(n: int, rate: float, oracle_name: str, folder: str) -> dict[str, float]:
    """One measured run in this process (the subprocess side)."""
    import gc
    import warnings

    import traces
    from oracle.model import Oracle, OracleRangeWarning
    from sim.config import ServerConfig, SloConfig
    from sim.results.metrics import run_summary
    from sim.serving.fleet import Fleet
    from sim.serving.run import simulate_fleet

    warnings.simplefilter("ignore", OracleRangeWarning)
    fleet = Fleet.single(Oracle.load(oracle_name), ServerConfig())
    trace = traces.load("synthetic", num_requests=n, rate_per_s=rate, seed=0)
    # the compiled kernel loads once per process (a fixed cost, not per request); the first run's
    # records stream too, as the measured run's do
    streams = "records_path" in inspect.signature(simulate_fleet).parameters
    if streams:
        simulate_fleet(trace.iloc[:100], fleet, records_path=Path(folder) / "warm.parquet")
    else:
        simulate_fleet(trace.iloc[:100], fleet)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS mark (VmHWM)
    base_kb = _status_kb("VmRSS")
    path = Path(folder) / "requests.parquet"
    start = time.perf_counter()
    if streams:
        result = simulate_fleet(trace, fleet, records_path=path)
    else:  # the version before streamed records: the whole table in memory, written at the end
        result = simulate_fleet(trace, fleet)
        result.requests.to_parquet(path, index=False)
    summary = run_summary(result, SloConfig())
    total_s = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM")
    busy = sum(s.busy_s for s in result.servers) / result.makespan_s
    return {
        "n": n,
        "base_mb": base_kb / 1024,
        "peak_mb": peak_kb / 1024,
        "bytes_per_request": (peak_kb - base_kb) * 1024 / n,
        "loop_s": result.wall_s,
        "total_s": total_s,
        "busy": busy,
        "completed": summary.completed,
        "energy_j": summary.energy_j,
        "records_mb": path.stat().st_size / 2**20,
    }


def measure(n: int, rate: float, oracle: str) -> dict[str, float]:
    """Run `child` in a fresh interpreter; its figures."""
    with tempfile.TemporaryDirectory() as folder:
        cmd = [sys.executable, __file__, "--child", str(n), "--rate", str(rate), "--oracle", oracle, "--folder", folder]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 3_000_000])
    parser.add_argument("--rate", type=float, default=10.0, help="synthetic arrivals per s")
    parser.add_argument("--repeat", type=int, default=3, help="fresh processes per size (interleaved)")
    parser.add_argument("--oracle", default="llama-3.1-8b_h100")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rate, args.oracle, args.folder)))
        return
    runs: dict[int, list[dict[str, float]]] = {n: [] for n in args.sizes}
    for _ in range(args.repeat):
        for n in args.sizes:
            r = measure(n, args.rate, args.oracle)
            runs[n].append(r)
            print(
                f"  {n:>11,} requests: +{r['bytes_per_request']:6.1f} B/request "
                f"(RSS {r['base_mb']:,.0f} MB after the trace, peak {r['peak_mb']:,.0f} MB), "
                f"loop {r['loop_s']:.1f} s, whole {r['total_s']:.1f} s, busy {r['busy']:.0%}, "
                f"records {r['records_mb']:,.0f} MB",
                flush=True,
            )
    for n, rs in runs.items():
        b = [r["bytes_per_request"] for r in rs]
        p = [r["peak_mb"] for r in rs]
        print(
            f"{n:,} requests at {args.rate:g}/s, {len(rs)} fresh processes: peak RSS growth beyond the trace "
            f"min {min(b):.1f} / median {statistics.median(b):.1f} B per request; "
            f"peak RSS min {min(p):,.0f} / median {statistics.median(p):,.0f} MB"
        )


if __name__ == "__main__":
    main()

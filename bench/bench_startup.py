"""Start-up: the default command (`python -m sim`: azure_chat, the shipped oracle, MLflow into
./mlflow.db) timed as a whole process, in fresh subprocesses.

    python bench/bench_startup.py [--repeat 5] [--variant LABEL=PYTHONPATH ...] [--floors] [--args "..."]

Each repeat runs, per variant and interleaved, the command in a new empty folder (a new MLflow
store: created and migrated by the run) and in a folder whose store already exists (made by an
untimed run first). It prints, per variant and store, the min and median of the whole-process
wall time, of the time until the console table's first row is printed (stdout read line by line,
PYTHONUNBUFFERED=1 as on a terminal), of the time until the run is logged (its folder's
tracking.json written: by the background process that draws the plots and logs the run after the
command ends, `background=true`, the default) and of the CPU time (user + system) of the command
and the helper processes it waited for, the least noisy of the three on a shared machine. Each
run's background process is waited for before the next run starts. `--variant` runs another
checkout's code, e.g. the code before a change (`before=/tmp/old-checkout`); default: this
checkout. `--floors` also times what no change to this project can remove: the interpreter,
`import mlflow` and the imports of MLflow's SQLite store, the imports of the libraries the
simulation runs on, and the command with tracking and plots
off. Target (issue 12): the whole process in ≤ 1.5 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE_ROW = "energy (kJ)"  # the table's first row (sim/console/table.py)
FLOORS = {
    "python -c pass": ["-c", "pass"],
    "import mlflow": ["-c", "import mlflow"],
    "MLflow SQLite store imports": ["-c", "import mlflow.store.tracking.sqlalchemy_store, alembic.migration"],
    "the simulator's libraries' imports": ["-c", "import numpy, pandas, numba, scipy.linalg, hydra, pyarrow, simpy"],
}


def run(pythonpath: str, args: list[str], cwd: Path) -> tuple[float, float, float, float]:
    """(whole-process wall s, s until the table's first row, s until the run is logged (the
    process's end if it logs in the foreground; NaN: never within `LOGGED_WAIT_S`, or no
    tracking), CPU s of the process and the children it waited for) of one subprocess; returns
    once its background process, if any, is done."""
    env = {**os.environ, "PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    assert proc.stdout is not None
    table, folder, background = float("nan"), None, False
    for line in proc.stdout:
        if table != table and line.startswith(TABLE_ROW):
            table = time.perf_counter() - start
        if line.startswith("results in "):
            folder = Path(line.removeprefix("results in ").split(";")[0].strip())
            background = "background process" in line
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode} in {cwd}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    logged = wall if folder is not None and not background and "tracking.enabled=false" not in args else float("nan")
    while background and folder is not None and time.perf_counter() - start < LOGGED_WAIT_S:
        if (folder / "tracking.json").exists():
            logged = time.perf_counter() - start
            break
        time.sleep(0.01)
    return wall, table, logged, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


LOGGED_WAIT_S = 120.0


def figures(values: list[float]) -> str:
    return f"min {min(values):.2f} s, median {statistics.median(values):.2f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--variant", action="append", default=[], help="LABEL=PYTHONPATH (repeatable)")
    p.add_argument("--floors", action="store_true", help="also time the interpreter, MLflow imports, no tracking")
    p.add_argument("--args", default="", help="extra overrides for the command, space-separated")
    args = p.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant) or {"this checkout": str(ROOT)}
    command = ["-m", "sim", *args.args.split()]
    cases = [(label, store) for label in variants for store in ("new store", "existing store")]
    if args.floors:
        first = next(iter(variants.values()))
        cases += [(name, "") for name in FLOORS] + [("tracking.enabled=false plots=false", "")]
    wall: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    table: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    logged: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    cpu: dict[tuple[str, str], list[float]] = {c: [] for c in cases}
    start_load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        existing = {label: Path(tmp, f"existing-{i}") for i, label in enumerate(variants)}
        for label, folder in existing.items():
            folder.mkdir()
            run(variants[label], command, folder)  # creates the store, untimed
        for k in range(args.repeat):
            for label, store in cases:
                if store == "new store":
                    cwd = Path(tmp, f"new-{k}-{len(wall[(label, store)])}-{label}")
                    cwd.mkdir()
                    w, t, g, c = run(variants[label], command, cwd)
                elif store == "existing store":
                    w, t, g, c = run(variants[label], command, existing[label])
                elif label in FLOORS:
                    w, t, g, c = run(first, FLOORS[label], Path(tmp))
                else:
                    w, t, g, c = run(first, [*command, "tracking.enabled=false", "plots=false"], Path(tmp))
                wall[(label, store)].append(w)
                logged[(label, store)].append(g)
                cpu[(label, store)].append(c)
                table[(label, store)].append(t)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"`python -m sim {args.args}`, {args.repeat} interleaved repeats, {os.cpu_count()} CPUs, "
          f"load average {start_load:.1f} before and {load:.1f} after")  # fmt: skip
    for label, store in cases:
        name = f"{label}, {store}" if store else f"floor: {label}"
        line = f"{name:<44} whole process {figures(wall[(label, store)])}"
        if not any(t != t for t in table[(label, store)]):
            line += f"; table at {figures(table[(label, store)])}"
        if not any(g != g for g in logged[(label, store)]):
            line += f"; logged at {figures(logged[(label, store)])}"
        line += f"; CPU {figures(cpu[(label, store)])}"
        print(line)


if __name__ == "__main__":
    main()

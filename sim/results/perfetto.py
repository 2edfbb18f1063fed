"""A Chrome/Perfetto trace (JSON trace events, open it in ui.perfetto.dev) of one replica over a
window of simulated time, from the run's folder alone:

    python -m sim.plots FOLDER --perfetto OUT.json --replica 0 --window 0:60

Each request served by the replica is a row of slices: queued (arrival to the start of its
prefill), prefill (to its first token) and decode (to its last); requests share rows where their
times do not overlap. Counters below them: the replica's power (W), sequences per step, KV cache
held (%), requests queued and throughput (output tokens/s), from its binned timelines. The
folder keeps no single steps (only their bins), so the steps show as these counters.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.results.timelines import REPLICAS_FILE, TIMELINES_FILE

US = 1e6  # trace timestamps are in microseconds
PHASES = (("queued", "arrival_s", "start_s"), ("prefill", "start_s", "first_token_s"),
          ("decode", "first_token_s", "finish_s"))  # fmt: skip
COUNTERS = (("power (W)", "power_w", 1.0), ("sequences per step", "running", 1.0),
            ("KV cache held (%)", "kv_used", 100.0), ("requests queued", "queued", 1.0),
            ("output tokens/s", "tokens_per_s", 1.0))  # fmt: skip
COLUMNS = [
    "request_id",
    "server",
    "n_in_served",
    "n_out_served",
    *dict.fromkeys(c for _, a, b in PHASES for c in (a, b)),
]


def parse_window(text: str) -> tuple[float, float]:
    """'START:END' in simulated seconds (END may be empty: to the run's end); ValueError if not."""
    start, sep, end = text.partition(":")
    try:
        window = (float(start or 0.0), float(end) if end else float("inf"))
    except ValueError:
        window = (0.0, -1.0)
    if not sep or not 0.0 <= window[0] < window[1]:
        raise ValueError(f"--window must be START:END in simulated seconds with 0 ≤ START < END, got {text!r}")
    return window


def write_trace(folder: Path, out: Path, replica: int, window: tuple[float, float]) -> int:
    """Write the trace of `replica` over `window` (s) to `out`; the number of requests in it.
    ValueError (one line) for a replica the run does not have."""
    lines = _replica_lines(folder, replica)
    records = pd.read_parquet(folder / "requests.parquet", columns=COLUMNS)
    start, end = window
    mine = records[(records["server"] == replica) & (records["arrival_s"] < end)]
    mine = mine[mine["finish_s"].fillna(mine["arrival_s"]) >= start]
    events = [_meta(replica), *_request_events(mine), *_counter_events(lines, start, end)]
    out.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
    return len(mine)


def _replica_lines(folder: Path, replica: int) -> pd.DataFrame:
    """The replica's binned timelines: its rows of replicas.parquet, or a single server's run."""
    if (folder / REPLICAS_FILE).exists():
        every = pd.read_parquet(folder / REPLICAS_FILE)
        lines, known = every[every["replica"] == replica], f"replicas 0–{int(every['replica'].max())}"
    else:
        lines = pd.read_parquet(folder / TIMELINES_FILE)
        lines, known = lines[lines["run"] == 0] if replica == 0 else lines.iloc[:0], "replica 0 only"
    if lines.empty:
        raise ValueError(f"--replica {replica}: not a replica of this run ({known})")
    return lines


def _meta(replica: int) -> dict[str, Any]:
    return {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": f"replica {replica}"}}


def _request_events(records: pd.DataFrame) -> list[dict[str, Any]]:
    """Complete ('X') events of each request's phases, on rows (tids) shared where they do not overlap."""
    events: list[dict[str, Any]] = []
    rows = _rows(records["arrival_s"].to_numpy(), records["finish_s"].fillna(records["start_s"]).to_numpy())
    for row, r in zip(rows, records.itertuples(index=False), strict=True):
        args = {"request": int(r.request_id), "n_in": int(r.n_in_served), "n_out": int(r.n_out_served)}
        for name, a, b in PHASES:
            t0, t1 = getattr(r, a), getattr(r, b)
            if np.isfinite(t0) and np.isfinite(t1):
                events.append({"name": name, "ph": "X", "pid": 1, "tid": row, "ts": t0 * US,
                               "dur": max(t1 - t0, 0.0) * US, "args": args})  # fmt: skip
    return events


def _rows(begin: np.ndarray, finish: np.ndarray) -> list[int]:
    """A row per interval [begin, finish): the lowest free row when it begins (greedy, by begin)."""
    rows = [0] * begin.size
    busy: list[tuple[float, int]] = []  # (free from, row)
    free: list[int] = []
    for i in np.argsort(begin, kind="stable"):
        while busy and busy[0][0] <= begin[i]:
            heapq.heappush(free, heapq.heappop(busy)[1])
        rows[i] = heapq.heappop(free) if free else len(busy)
        end = finish[i] if np.isfinite(finish[i]) else begin[i]
        heapq.heappush(busy, (end, rows[i]))
    return rows


def _counter_events(lines: pd.DataFrame, start: float, end: float) -> list[dict[str, Any]]:
    """Counter ('C') events of the binned timelines within [start, end]."""
    lines = lines[(lines["t_s"] >= start) & (lines["t_s"] <= end)]
    return [
        {"name": name, "ph": "C", "pid": 1, "ts": float(t) * US, "args": {name: float(v) * scale}}
        for name, col, scale in COUNTERS
        if col in lines.columns
        for t, v in zip(lines["t_s"], lines[col], strict=True)
    ]

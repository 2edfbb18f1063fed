"""A run's timelines: power, batch, KV-cache use, queue length, throughput and SM clock binned over
simulated time, for the whole fleet (timelines.parquet) and, for a fleet of more than one server,
per replica (replicas.parquet). The plots (`sim.plots.compare`) are drawn from these files alone.

Each span's energy, busy time, sequence-, KV- and token counts are spread evenly over its
duration (power varies little within a span); each request's wait, from its arrival to the start
of its first prefill, is spread the same way over its bins, so a bin's mean queue length is its
waiting request-seconds over its width.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sim.engine.ledger import ServerStats
from sim.serving.run import SimResult
from tracking.files import replacing

TIMELINE_BINS = 500
TIMELINES_FILE = "timelines.parquet"
REPLICAS_FILE = "replicas.parquet"


def timelines(run: SimResult, horizon_s: float | None = None, bins: int = TIMELINE_BINS) -> pd.DataFrame:
    """A run's timelines over [0, horizon] in `bins` bins: t_s (bin centre, s), power_w (W of all
    GPUs, idle included), running (sequences per step, mean per GPU, idle GPUs 0), kv_used (share
    of the KV cache held, mean per GPU), tokens_per_s (output tokens per second, all GPUs),
    clock_mhz (the SM clock averaged over the bin's busy GPU time; NaN while idle or where the
    GPU's clocks are unknown) and queued (requests arrived and not yet started, mean over the bin)."""
    edges = _edges(run, horizon_s, bins)
    frame = _server_lines(run.servers, edges)
    frame["queued"] = _queued(run, edges)
    return frame


def replica_timelines(run: SimResult, horizon_s: float | None = None, bins: int = TIMELINE_BINS) -> pd.DataFrame:
    """`timelines` of each server alone, with columns `replica` (its index in the fleet) and
    `name` (its pool and number, e.g. main-0)."""
    edges = _edges(run, horizon_s, bins)
    frames = [
        _server_lines((s, ), edges).assign(queued=_queued(run, edges, replica=k), replica=k, name=s.name)
        for k, s in enumerate(run.servers)
    ]  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _edges(run: SimResult, horizon_s: float | None, bins: int) -> np.ndarray:
    return np.linspace(0.0, max(run.makespan_s, horizon_s or 0.0, 1e-9), bins + 1)


def _server_lines(servers: Sequence[ServerStats], edges: np.ndarray) -> pd.DataFrame:
    """t_s, power_w, running, kv_used, tokens_per_s and clock_mhz of `servers` together, per bin of
    `edges`."""
    width = np.diff(edges)
    power, running, kv, tokens, busy_all, mhz_s = (np.zeros(width.size) for _ in range(6))
    known = True  # every busy server logged its clock
    for s in servers:
        if not s.span_s.size:
            power += s.idle_power_w
            continue
        t = np.concatenate([s.span_start_s, s.span_start_s + s.span_s])
        order = np.argsort(t, kind="stable")
        ends = t[order]
        busy = _per_bin(edges, ends, order, s.span_s)
        power += (
            _per_bin(edges, ends, order, s.span_energy_j) + s.idle_power_w * np.maximum(width - busy, 0.0)
        ) / width
        running += _per_bin(edges, ends, order, s.span_running * s.span_s)
        kv += _per_bin(edges, ends, order, s.span_kv_used * s.span_s)
        tokens += _per_bin(edges, ends, order, s.span_tokens.astype(float))
        busy_all += busy
        logged = s.known_mhz_s
        if logged is None:
            known = False
        else:
            mhz_s += _per_bin(edges, ends, order, logged)
    gpus = max(len(servers), 1)
    on = busy_all > 1e-12 * width  # (per-bin sums are cumulative differences: rounding is not busy time)
    clock = np.full(width.size, np.nan)
    if known:
        clock[on] = mhz_s[on] / busy_all[on]
    # per-bin sums are differences of cumulative sums: clip their rounding (±1e-20) at 0
    running, kv = np.maximum(running, 0.0), np.clip(kv / width / gpus, 0.0, 1.0)
    return pd.DataFrame(
        {"t_s": 0.5 * (edges[1:] + edges[:-1]), "power_w": power, "running": running / width / gpus,
         "kv_used": kv, "tokens_per_s": tokens / width, "clock_mhz": clock}
    )  # fmt: skip


def _queued(run: SimResult, edges: np.ndarray, replica: int | None = None) -> np.ndarray:
    """Mean number of requests waiting (arrived, first prefill not started) per bin of `edges`;
    only those served by `replica` if given. Rejected requests never started: not counted."""
    records = run.records
    if not len(records):
        return np.zeros(edges.size - 1)
    arrival = records["arrival_s"].to_numpy(dtype=float)
    wait = records["start_s"].to_numpy(dtype=float) - arrival
    keep = np.isfinite(wait) & (wait > 0)
    if replica is not None:
        keep &= records["server"].to_numpy() == replica
    return _overlapping(edges, arrival[keep], wait[keep]) / np.diff(edges)


def _overlapping(edges: np.ndarray, start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Per bin of `edges`, the interval-seconds of intervals [start, start + length) that may
    overlap: the count of open intervals, integrated between consecutive starts and ends."""
    if not start.size:
        return np.zeros(edges.size - 1)
    t = np.concatenate([start, start + length])
    order = np.argsort(t, kind="stable")
    t, open_ = t[order], np.cumsum(np.concatenate([np.ones(start.size), -np.ones(start.size)])[order])
    area = np.concatenate([[0.0], np.cumsum(open_[:-1] * np.diff(t))])
    return np.diff(np.interp(edges, t, area, left=0.0, right=area[-1]))


def _per_bin(edges: np.ndarray, ends: np.ndarray, order: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """Per bin of `edges`, the sum of a per-span amount spread evenly over each span; `ends` are
    the spans' starts and ends sorted, `order` the sort that gave them. The spans must not
    overlap (one server's spans follow each other); `_overlapping` for those that may."""
    cum = np.concatenate([np.cumsum(amount) - amount, np.cumsum(amount)])
    return np.diff(np.interp(edges, ends, cum[order], left=0.0, right=cum.max()))


def write_timelines(folder: Path, runs: Sequence[SimResult]) -> list[str]:
    """timelines.parquet in the run's folder: each run's `timelines` over the longest run's
    makespan, with a column `run` (0: the policy's run, 1: the baseline); and, for a fleet of more
    than one server, replicas.parquet: the policy's run's `replica_timelines`. The names written."""
    horizon = max(r.makespan_s for r in runs)
    names = [_write(folder / TIMELINES_FILE, [timelines(r, horizon).assign(run=k) for k, r in enumerate(runs)])]
    if len(runs[0].servers) > 1:
        names.append(_write(folder / REPLICAS_FILE, [replica_timelines(runs[0], horizon)]))
    return names


def _write(path: Path, frames: list[pd.DataFrame]) -> str:
    with replacing(path) as tmp:
        pd.concat(frames, ignore_index=True).to_parquet(tmp, index=False)
    return path.name

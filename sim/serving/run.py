"""`simulate_fleet`: replay a trace through a policy and a fleet of servers; no Hydra, no MLflow.

trace → policy (static policies shape the whole trace up front; dynamic ones decide at arrival)
→ router → servers (SimPy) → job table → per-request records. When the router can assign the
whole trace up front (round robin, or one replica) the servers read their arrivals as the clock
passes them; otherwise a dispatcher routes each arrival, at its time, with the servers' state
(`sim.serving.wiring`). The warnings a run ends with are `sim.serving.run_warnings`.
A closed loop (`sim.serving.clients`) has no arrivals up front: its clients send through the dispatcher.
Summarization requests run on a separate summarizer server or on the fleet; when one finishes,
the user's request (now on the summary) is routed to a replica.
"""

from __future__ import annotations

import functools
import gc
import heapq
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from oracle.model import Oracle, warn_outside_range
from sim.config import ServerConfig
from sim.engine.checks import checked_arrays
from sim.engine.jobs import JobTable
from sim.engine.ledger import ServerStats
from sim.engine.prefix import PrefixBlocks
from sim.engine.spans import StreamedSpans
from sim.policies.base import Policy, Shaping, unshaped
from sim.results.records import RecordsFile, RecordsWriter, Requests
from sim.serving.clients import closed_loop
from sim.serving.fleet import Fleet
from sim.serving.routed import RoutedFleet
from sim.serving.run_warnings import warn_missed_budget, warn_rejected
from sim.serving.server import Server
from sim.serving.wiring import wire
from traces.jsonl import block_tokens


@dataclass(frozen=True)
class SimResult:
    """One simulation: per-request records (in memory, or a Parquet file for a streamed run),
    per-server activity, simulated and wall time (s), and, for a streamed run, the fleet's peak
    power (W) computed as it went (its span logs are binned)."""

    policy: str
    records: pd.DataFrame | RecordsFile
    servers: tuple[ServerStats, ...]
    makespan_s: float
    wall_s: float
    peak_power_w: float | None = None

    @property
    def requests(self) -> pd.DataFrame:
        """The per-request records as a DataFrame (read from the file for a streamed run)."""
        return self.records if isinstance(self.records, pd.DataFrame) else self.records.frame()


def simulate(
    requests: pd.DataFrame,
    oracle: Oracle,
    server: ServerConfig,
    policy: Policy | None = None,
    *,
    progress: bool = False,
    records_path: Path | None = None,
    clients: int | None = None,
) -> SimResult:
    """Serve `requests` (columns arrival_s sorted, n_in, n_out) shaped by `policy` on one server
    (with `clients`, or a closed-loop trace, in a closed loop: `simulate_fleet`)."""
    fleet = Fleet.single(oracle, server)
    return simulate_fleet(requests, fleet, policy, progress=progress, records_path=records_path, clients=clients)


def simulate_fleet(
    requests: pd.DataFrame,
    fleet: Fleet,
    policy: Policy | None = None,
    *,
    progress: bool = False,
    records_path: Path | None = None,
    clients: int | None = None,
) -> SimResult:
    """Serve `requests` shaped by `policy` (default: none) on a fleet of replicas behind its router.

    Closed loop: with `clients` (default: the trace's `attrs["clients"]`, set by
    `traces.load("closed_loop")`) that many clients send the requests in the frame's order, each
    one after its last finished and its `think_s` passed (`sim.serving.clients`); `arrival_s` is not read,
    and the records' `arrival_s` is each request's send time.

    With `records_path` the run is streamed, its peak memory growing by under 100 bytes per
    request (the job table's ~52 bytes a job, bounded buffers): the records go to that Parquet
    file during the run, each row group of `sim.results.records.CHUNK_ROWS` rows as soon as all its
    requests are final (checked whenever a server hands its span log over, `DRAIN_SPANS`), the
    rest at the end; the span logs go into time bins (`sim.engine.spans`), with the fleet's peak power
    computed exactly as the run goes. If the run stops with an error (Ctrl-C included), the file
    is closed valid with the row groups written so far, and a note on the error says how many.
    """
    policy = policy or Policy()
    arrival, n_in, n_out = checked_arrays(requests)
    loop = closed_loop(requests, clients)
    if loop is not None:
        arrival = np.full(arrival.size, np.nan)  # the clients write each send time
    shaping = unshaped(n_in, n_out) if policy.dynamic else policy.shape(n_in, n_out)
    parents = np.flatnonzero(shaping.summary_tokens > 0)
    if parents.size and policy.summarizer is None:
        raise ValueError(f"policy {policy.name!r} asks for summaries but has no summarizer")
    for oracle in {id(p.oracle): p.oracle for p in fleet.pools}.values():  # one warning per run and oracle
        warn_outside_range(oracle, shaping.n_in, shaping.n_out, what="this run")
    jobs = _job_table(shaping, n_in, parents)
    if "hash_ids" in requests.columns:
        size = block_tokens(requests)
        blocks = PrefixBlocks.from_lists(requests["hash_ids"], shaping.n_in, shaping.kept_prefix, size)
        jobs.prefix = blocks.extended(parents, n_in[parents]) if parents.size else blocks
    del shaping  # the job table holds the served lengths
    if records_path is not None and any(p.server.record_features for p in fleet.pools):
        raise ValueError("server.record_features needs the whole span log: run without records_path")
    start = time.perf_counter()
    env = simpy.Environment()
    servers, routed = wire(env, jobs, arrival, n_in, n_out, parents, fleet, policy, loop)
    made = Requests(arrival, n_in, n_out, parents, jobs, [s.costs for s in servers], fleet.exact_steps)
    writer = None if records_path is None else RecordsWriter(made, records_path)
    try:
        horizon = float(arrival[-1]) if arrival.size and loop is None else 0.0  # no bar for a closed loop
        stats, peak, wall = _run(env, servers, routed, horizon, writer, progress, start)
        if np.isnan(arrival).any():
            raise RuntimeError(f"closed loop: {int(np.isnan(arrival).sum()):,} requests were never sent")
        records: pd.DataFrame | RecordsFile = made.records() if writer is None else writer.close()
    except BaseException as error:  # Ctrl-C too: the file keeps the row groups written, and says so
        if writer is not None:
            error.add_note(writer.abort())
        raise
    finish = jobs.finish_s[: arrival.size]
    makespan = float(np.nanmax(finish)) if np.isfinite(finish).any() else 0.0
    makespan = max(makespan, float(arrival[-1]) if arrival.size else 0.0)
    warn_rejected(jobs.reason[: arrival.size])
    warn_missed_budget(stats, servers)
    if writer is not None:
        del made, jobs, servers, env, finish, writer  # the job table, the largest thing left, is held in
        gc.collect()  # reference cycles of the SimPy processes: free it before anything reads the file
    return SimResult(policy.name, records, stats, makespan, wall, peak)


def _run(
    env: simpy.Environment,
    servers: list[Server],
    loop: RoutedFleet | None,
    horizon_s: float,
    writer: RecordsWriter | None,
    progress: bool,
    start: float,
) -> tuple[tuple[ServerStats, ...], float | None, float]:
    """Run the environment, or the routed fleet's plain loop: the servers' stats, the fleet's
    peak power (W) of a streamed run, and the wall time (s) since `start` (`time.perf_counter`).
    A streamed run flushes the records' final row groups whenever a server hands its span log over."""
    bar = _progress(horizon_s, progress)
    clock = (lambda: env.now) if loop is None else (lambda: loop.now)
    streamed = None if writer is None else _stream_spans(servers, writer.flush, clock)
    try:
        if loop is not None:
            loop.run(bar)
        else:
            if bar is not None:
                _tick(env, bar, horizon_s)
            _replay_alone(servers, bar)
            env.run()
    finally:
        wall = time.perf_counter() - start
        if bar is not None:
            bar.close()
    stats = tuple(s.stats() for s in servers)
    if streamed is None:
        return stats, None, wall
    return *streamed.finish(stats), wall


REPLAY_EVENTS = 1024  # events a server fed alone runs before the plain loop turns to the one furthest behind


def _replay_alone(servers: list[Server], bar: Any) -> None:
    """Run the servers fed alone (`Server.replay`) in one plain loop, the one whose clock is
    furthest behind first, `REPLAY_EVENTS` events at a time: their clocks advance together, so a
    streamed run's span bins and peak sweep hold only the spans between the slowest clock and the
    fastest, and the progress bar moves. Each server's events are the same as when it runs alone."""
    heap = [(s.ledger.now, k) for k, s in enumerate(servers) if s.alone]
    heapq.heapify(heap)
    while heap:
        k = heap[0][1]
        s = servers[k]
        if s.replay(REPLAY_EVENTS):
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (s.ledger.now, k))
        if bar is not None and heap:
            bar.update(min(round(heap[0][0]), bar.total) - bar.n)


def _job_table(shaping: Shaping, n_in: np.ndarray, parents: np.ndarray) -> JobTable:
    """The jobs: the user's requests as shaped (trace order), then the summarization requests of
    the user requests `parents` (on their original prompts)."""
    if not parents.size:
        return JobTable(shaping.n_in, shaping.n_out)
    return JobTable(
        np.concatenate([shaping.n_in, n_in[parents]]),
        np.concatenate([shaping.n_out, shaping.summary_tokens[parents]]),
    )


def _stream_spans(servers: list[Server], then: Callable[[], None], clock: Callable[[], float]) -> StreamedSpans:
    """Each server hands its span log over every `DRAIN_SPANS` / servers spans (at least
    `HAND_OVER_MIN`), then calls `then` (the records' flush). `clock()` is the time (s) of the
    event under way."""

    def settled() -> float:
        # no server logs a span starting before its clock, and an idle one none before it is
        # woken: now, to rounding (a server fed alone runs ahead of the SimPy clock)
        return min(s.ledger.now if s.alone or not s.idle else clock() * (1 - 1e-12) for s in servers)

    streamed = StreamedSpans([s.ledger for s in servers], [s.costs.idle_power_w for s in servers], settled)
    every = max(DRAIN_SPANS // len(servers), HAND_OVER_MIN)
    for i, s in enumerate(servers):
        s.ledger.hand_over(every, functools.partial(_hand_over, streamed, i, then))
    return streamed


def _hand_over(streamed: StreamedSpans, server: int, then: Callable[[], None]) -> None:
    streamed.take(server)
    then()


DRAIN_SPANS = 1 << 16  # spans a streamed run's ledgers hold before they hand them over, in all
HAND_OVER_MIN = 1024  # ... but at least this many per ledger


def _progress(horizon_s: float, enabled: bool) -> Any:
    """A tqdm bar over simulated seconds (None: no bar, as in a sweep's job or off a terminal)."""
    if not enabled or horizon_s <= 0:
        return None
    from sim.console.progress import progress_bar

    bar = progress_bar(total=round(horizon_s), unit="sim-s", desc="simulating", leave=False)
    return None if bar.disable else bar


def _tick(env: simpy.Environment, bar: Any, horizon_s: float) -> None:
    """Feed the bar from a process that wakes 200 times over the SimPy run."""

    def tick() -> Generator[Any, Any, None]:
        step = horizon_s / 200
        while env.now < horizon_s:
            yield env.timeout(step)
            bar.update(max(min(round(env.now), bar.total) - bar.n, 0))  # a plain replay may be ahead

    env.process(tick())

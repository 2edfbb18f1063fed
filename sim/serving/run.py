"""`simulate_fleet`: replay a trace through a policy and a fleet of servers; no Hydra, no MLflow.

trace → policy (static policies shape the whole trace up front; dynamic ones decide at arrival)
→ router → servers (SimPy) → job table → per-request records. When the router can assign the
whole trace up front (round robin, or one replica) the servers read their arrivals as the clock
passes them; otherwise a dispatcher routes each arrival, at its time, with the servers' state.
A closed loop (`sim.serving.clients`) has no arrivals up front: its clients send through the dispatcher.
Summarization requests run on a separate summarizer server or on the fleet; when one finishes,
the user's request (now on the summary) is routed to a replica.
"""

from __future__ import annotations

import functools
import gc
import heapq
import time
import warnings
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import simpy

from oracle.model import Oracle, warn_outside_range
from sim.config import ServerConfig
from sim.engine.checks import checked_arrays
from sim.engine.costs import StepCosts
from sim.engine.jobs import REJECT_REASONS, REJECT_SUMMARY, REJECTED, JobTable
from sim.engine.kv import replica_kv
from sim.engine.prefix import PrefixBlocks
from sim.engine.spans import StreamedSpans
from sim.kernel.replica import RoutedFleet, fleet_fits
from sim.policies.base import Policy, Request, Shaping, unshaped
from sim.results.records import RecordsFile, RecordsWriter, Requests
from sim.serving.clients import Clients, closed_loop, listen
from sim.serving.fleet import Fleet
from sim.serving.routing import Router, make_router
from sim.serving.server import Server, ServerStats
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
    servers, routed = _wire(env, jobs, arrival, n_in, n_out, parents, fleet, policy, loop)
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
    _warn_rejected(jobs.reason[: arrival.size])
    _warn_missed_budget(stats, servers)
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


class RejectedRequestsWarning(UserWarning):
    """Requests of a run that no server could ever serve."""


def warn_rejected(records: pd.DataFrame) -> None:
    """One warning per run with the count of rejected requests by reason (records keep each one's)."""
    _warn_rejected(records["reject_reason"].cat.codes.to_numpy(), stacklevel=4)


def _warn_rejected(reason: np.ndarray, stacklevel: int = 3) -> None:
    """The warning of `warn_rejected`, from the requests' REJECT_* codes."""
    counts = np.bincount(reason, minlength=len(REJECT_REASONS))[1:]
    if not counts.any():
        return
    order = sorted(np.flatnonzero(counts), key=lambda k: -counts[k])
    parts = "; ".join(f"{counts[k]:,} {REJECT_REASONS[int(k) + 1]}" for k in order)
    warnings.warn(
        f"{int(counts.sum()):,} of {reason.size:,} requests were rejected, never served: {parts} "
        "(the records' reject_reason column names each one; a bigger GPU, a larger server.kv_memory_fraction, "
        "server.chunked_prefill=true or a shaping policy serves them)",
        RejectedRequestsWarning,
        stacklevel=stacklevel,
    )


class ClockBudgetWarning(UserWarning):
    """Steps of a run that no SM clock keeps within the clock controller's budget."""


def _warn_missed_budget(stats: Sequence[ServerStats], servers: Sequence[Server]) -> None:
    """One warning per run with the decode steps slower than the clock controller's budget even at
    full clock (`gpu.clock_policy=slo`): those ran at full clock, saving nothing."""
    missed, steps = sum(s.missed_budget_steps for s in stats), sum(s.steps for s in stats)
    if not missed:
        return
    budgets = sorted({s.costs.step_budget_s for s in servers if s.costs.step_budget_s > 0})
    warnings.warn(
        f"{missed:,} decode steps ({100 * missed / max(steps, 1):.1f} % of {steps:,} steps) took longer than the clock "
        f"controller's step budget ({', '.join(f'{1000 * b:g} ms' for b in budgets)}: gpu.slo_headroom × "
        "slo.tpot_s) even at full clock, so no clock met it and they ran at full clock (summary.json: "
        "clock_budget_missed_steps); a larger gpu.slo_headroom or slo.tpot_s, or a smaller batch, lets the "
        "controller act there",
        ClockBudgetWarning,
        stacklevel=3,
    )


def _wire(
    env: simpy.Environment,
    jobs: JobTable,
    arrival: np.ndarray,
    n_in: np.ndarray,
    n_out: np.ndarray,
    parents: np.ndarray,
    fleet: Fleet,
    policy: Policy,
    loop: tuple[int, np.ndarray] | None = None,
) -> tuple[list[Server], RoutedFleet | None]:
    """Build the servers and route arrivals to them (feeds, or a dispatcher and callbacks), and
    the plain loop that runs them instead of SimPy, if one can.

    Servers fed all their jobs run alone, ahead of the SimPy clock (`_replay_alone`). A router
    that decides per arrival, with no dynamic policy and no summaries, runs in `RoutedFleet`. A
    closed loop's (`loop`: clients, think times in s) clients send through the dispatcher.
    """
    replicas = _replicas(env, jobs, fleet)
    router = make_router(fleet, replicas)
    fixed = loop is None and not policy.dynamic and not parents.size  # every arrival known, nothing decided on it
    if fixed and router.static:
        if len(replicas) == 1:
            replicas[0].feed(arrival, range(arrival.size), alone=True)
            return replicas, None
        assigned = router.assign(*jobs.lengths())
        for s in replicas:
            ids = np.flatnonzero(assigned == s.index)
            s.feed(arrival[ids], ids, alone=True)
        return replicas, None
    if fixed and fleet_fits(replicas, router):
        return replicas, RoutedFleet(replicas, router, arrival, jobs)
    servers = list(replicas)
    side = summaries = None
    if parents.size:
        assert policy.summarizer is not None
        if policy.summarizer.placement == "separate":  # on its own GPU, with the first pool's engine config
            summarizer = policy.summarizer.oracle
            side = _server(env, jobs, summarizer, fleet.pools[0].server, len(servers), "summarizer", "summarizer")
            servers.append(side)
        summaries = _Summaries(jobs, arrival.size, parents.tolist(), router)
        for s in servers:
            s.on_finish, s.on_reject = summaries.finished, summaries.rejected
    if loop is None:
        _Dispatcher(env, arrival, n_in, n_out, parents, policy, router, side, jobs)
        return servers, None
    first = arrival[: loop[0]]  # the clients' first requests, sent at 0.0 s
    dispatcher = _Dispatcher(env, first, n_in, n_out, parents, policy, router, side, jobs)
    listen(servers, Clients(env, loop[0], arrival, loop[1], dispatcher.send), summaries)
    return servers, None


def _replicas(env: simpy.Environment, jobs: JobTable, fleet: Fleet) -> list[Server]:
    """The fleet's servers, pool by pool; named after the pool (with -k when it has several)."""
    servers: list[Server] = []
    for pool in fleet.pools:
        costs = StepCosts.from_oracle(pool.oracle)  # once per pool: its clock ladder takes ~2 ms
        for k in range(pool.replicas):
            name = pool.name if pool.replicas == 1 else f"{pool.name}-{k}"
            servers.append(_server(env, jobs, pool.oracle, pool.server, len(servers), name, pool.name, costs))
    return servers


def _server(
    env: simpy.Environment,
    jobs: JobTable,
    oracle: Oracle,
    config: ServerConfig,
    index: int,
    name: str,
    pool: str,
    costs: StepCosts | None = None,
) -> Server:
    """A server of `oracle` under `config`; `costs` its step costs if already built (`StepCosts.from_oracle`)."""
    kv = replica_kv(oracle, config)
    costs = StepCosts.from_oracle(oracle) if costs is None else costs
    return Server(env, costs, config, jobs, kv, index=index, name=name, pool=pool)


@dataclass(frozen=True)
class _Summaries:
    """Summarization jobs n, n+1, … serve user requests `parents`; their outcomes route here."""

    jobs: JobTable
    n: int
    parents: list[int]
    router: Router

    def finished(self, job: int, t: float) -> None:
        """A summary is ready: the user's request (now on the summary) goes to a replica."""
        if job >= self.n:
            parent = self.parents[job - self.n]
            self.router.pick(self.jobs.n_in[parent], self.jobs.n_out[parent], parent).submit(parent, t)

    def rejected(self, job: int, t: float) -> None:
        """A prompt too long for the summarizer: its user's request is rejected too."""
        if job >= self.n:
            parent = self.parents[job - self.n]
            self.jobs.status[parent] = REJECTED
            self.jobs.reason[parent] = REJECT_SUMMARY


class _Dispatcher:
    """Arrivals routed one by one at their times (`times`: of the first requests, trace order;
    a closed loop's clients `send` the rest): a dynamic policy decides with the chosen
    replica's state; a request to summarise sends its summarization job first (to the
    summarizer, or routed). A callback on one timeout per distinct arrival time, not a process.
    The servers it must wake are woken at the end of that callback, in the order of their
    submits, as urgent events of that time would: no other event comes between."""

    def __init__(
        self,
        env: simpy.Environment,
        times: np.ndarray,
        n_in: np.ndarray,
        n_out: np.ndarray,
        parents: np.ndarray,
        policy: Policy,
        router: Router,
        summarizer: Server | None,
        jobs: JobTable,
    ) -> None:
        self.env, self.policy, self.router, self.summarizer, self.jobs = env, policy, router, summarizer, jobs
        # memoryviews read Python numbers in place (no list of objects per request)
        self.times, self.n_in, self.n_out = times.data, n_in.data, n_out.data
        self.summary_of = {p: n_in.size + k for k, p in enumerate(parents.tolist())}
        self.next = 0
        self._direct = False  # submits wake their servers themselves (`send`)
        self._woken: list[tuple[Server, float]] = []  # servers to wake at the end of this callback
        env.timeout(0.0).callbacks.append(self._arrive)

    def _arrive(self, _: simpy.Event) -> None:
        """Route every arrival due now, wait for the next one, then wake the servers to wake: after
        the next timeout is scheduled, as urgent wake-ups would run after this callback, so that
        the timeouts the wakes schedule come after it among events of one time."""
        env, times, i, n = self.env, self.times, self.next, len(self.times)
        now = env.now
        while i < n and times[i] <= now:
            self._route(i, times[i])
            i += 1
        self.next = i
        if i < n:
            env.timeout(times[i] - now).callbacks.append(self._arrive)
        woken = self._woken
        for server, t in woken:
            server.wake(t)
        woken.clear()

    def send(self, i: int, t: float) -> None:
        """Route request i arriving at t (s) from outside the arrival callback (a closed-loop
        client's send): a server to wake is woken by an urgent event, as `Server.submit` does."""
        self._direct = True
        try:
            self._route(i, t)
        finally:
            self._direct = False

    def _submit(self, server: Server, job: int, t: float) -> None:
        if self._direct:
            server.submit(job, t)
        elif server.offer(job, t):
            self._woken.append((server, t))

    def _route(self, i: int, t: float) -> None:
        jobs, router = self.jobs, self.router
        if self.policy.dynamic:
            server = router.pick(self.n_in[i], self.n_out[i], i)
            d = self.policy.decide(Request(t, self.n_in[i], self.n_out[i]), server.state())
            if d.summary_tokens:
                raise ValueError(f"dynamic policy {self.policy.name!r} cannot add summarization requests")
            jobs.n_in[i], jobs.n_out[i] = d.n_in, d.n_out
            if d.kept_prefix is not None and jobs.prefix is not None:
                jobs.prefix.keep(i, d.kept_prefix)
            self._submit(server, i, t)
        elif i in self.summary_of:
            job = self.summary_of[i]
            self._submit(self.summarizer or router.pick(jobs.n_in[job], jobs.n_out[job], job), job, t)
        else:
            self._submit(router.pick(jobs.n_in[i], jobs.n_out[i], i), i, t)


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

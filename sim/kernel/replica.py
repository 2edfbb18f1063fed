"""The Python side of the kernel: servers run by compiled loops, their results moved back.

`AloneReplica` runs a `sim.server.Server` fed alone (`sim.kernel.loop.run_alone`); `RoutedFleet`
runs a fleet whose router decides per arrival (`sim.kernel.fleet.run_fleet`). Each builds a
compiled `Replica` per server from its engine settings, scheduler, step costs and feed, and
after each run moves what the kernel buffered into the Python objects (`drain`): span rows into
the server's `Ledger` (handing the log over when it is due), preemption counters into the
`JobTable`, and the counters a caller reads back into the `Engine`.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import typed

from sim.jobs import JobTable
from sim.kernel import CACHE_DIR, state
from sim.kernel.fleet import FINISHED as FLEET_DONE
from sim.kernel.fleet import new_fleet, now_s, run_fleet
from sim.kernel.loop import FINISHED, run_alone

if TYPE_CHECKING:
    from sim.routing import Router
    from sim.server import Server

log = logging.getLogger("sweetspot")

SPAN_ROWS = 1024  # span rows a replica buffers before they move to its ledger
PROGRESS_EVERY = 4096  # arrival instants between two updates of a routed fleet's progress bar
_links: weakref.WeakKeyDictionary[JobTable, tuple[np.ndarray, ...]] = weakref.WeakKeyDictionary()
_told: set[str] = set()


def fits(server: Server) -> bool:
    """Whether the kernel can run a server fed alone: the fast mode and nothing listening to it
    (the exact-steps reference, recorded step features and callbacks run in `Server._replay`)."""
    return _fast(server) and server.on_change is None


def fleet_fits(servers: Sequence[Server], router: Router) -> bool:
    """Whether `RoutedFleet` can run these replicas: a router with compiled picks (it reads the
    replicas itself, so their `on_change` is not called), plain `Server`s (a subclass may change
    its events) in the fast mode with no other listener, nothing fed to them."""
    from sim.server import Server

    return router.kernel_code is not None and all(
        type(s) is Server and _fast(s) and not (s.alone or len(s._ftimes)) for s in servers
    )


def _fast(server: Server) -> bool:
    """The fast mode (no exact steps, no recorded features) and no completion or reject callback."""
    return not (server._exact or server._record) and server.on_finish is None and server.on_reject is None


def job_links(jobs: JobTable) -> tuple[np.ndarray, ...]:
    """The per-job arrays the kernel links jobs through (nxt, prv, dec_f, dec_key, dec_w), one set
    per job table, shared by its replicas (a job is in one replica at a time): 24 bytes a job."""
    links = _links.get(jobs)
    if links is None:
        n = len(jobs)
        i32 = np.full(n, -1, np.int32)
        links = _links[jobs] = (i32, i32.copy(), np.full(n, -1, np.int64), np.zeros(n, np.int32), np.zeros(n, np.int32))
    return links


def job_columns(jobs: JobTable) -> tuple[np.ndarray, ...]:
    """The job table's columns the kernel reads and writes, as numpy views of its buffers."""
    as32 = [np.frombuffer(a, dtype=np.int32) for a in (jobs.n_in, jobs.n_out, jobs.generated)]
    return (*as32, jobs.share, jobs.status, jobs.reason, jobs.first_s, jobs.finish_s, jobs.admit_s, jobs.chunks)


def build(server: Server, feed_t: np.ndarray, feed_j: np.ndarray, jobs: int) -> state.Replica:
    """The compiled replica of a server, fed `feed_j` at `feed_t` (s), serving up to `jobs` jobs."""
    e, kv, costs = server.engine, server.kv, server.costs
    seqs = max(1, min(e.max_seqs, jobs))
    settings: dict[str, Any] = {
        "cap": e.cap, "bs": kv.block_size, "full": kv.full_units, "wunits": kv.window_units,
        "wblocks": kv.window_blocks, "fit": e._fit, "max_seqs": e.max_seqs, "max_tokens": e.max_tokens,
        "chunked": e.chunked, "reserve": e.reserve, "static": e.static,
        "requeue_front": e.scheduler.requeue_front, "admit_after": e.scheduler.admit_after_preemption,
        "has_limit": costs.power_limit_w is not None, "limit": costs.power_limit_w or 0.0,
        **e.scheduler.kernel_settings(),
    }  # fmt: skip
    return state.new_replica(
        np.array([int(settings.get(k, 0)) for k in state.INT_SETTINGS], dtype=np.int64),
        np.array([float(settings.get(k, 0.0)) for k in state.FLOAT_SETTINGS]),
        np.array(costs.time_s, dtype=float),
        np.array(costs.energy_j, dtype=float),
        seqs,
        2 * seqs + 2,
        SPAN_ROWS,
        job_columns(server.jobs),
        job_links(server.jobs),
        feed_t,
        feed_j,
    )


def room(server: Server) -> int:
    """Span rows the kernel may buffer for the server before they move to its ledger: fewer than
    `SPAN_ROWS` when the ledger hands its log over sooner (`Ledger.hand_over`), so that the
    hand-over comes after the same span as with `Ledger.advance`."""
    ledger = server.ledger
    return max(min(SPAN_ROWS, (ledger._full - len(ledger._i) + 2) // 3), 1)


def drain(server: Server, r: state.Replica) -> bool:
    """Move the kernel's buffers into the server's ledger, the job table and the engine; whether
    its ledger's log is due to be handed over (the caller hands it over once all are drained)."""
    t, tc, step_avg, peak_w, fi, _, nrows, nlog, idle = state.clock(r)
    rows_f, rows_i, plog = state.buffers(r)
    ledger, jobs = server.ledger, server.jobs
    for j, kind, tokens in plog[:nlog].tolist():
        if kind == state.DECODER:
            jobs.extra_prefill_tokens[j] += tokens
            jobs.extra_prefill_pairs[j] += tokens * (tokens + 1) / 2
            jobs.recomputed_steps[j] += 1
            jobs.recomputed_ctx[j] += tokens
        elif kind == state.PARTIAL:
            jobs.extra_prefill_tokens[j] += tokens
            jobs.extra_prefill_pairs[j] += tokens * (tokens + 1) / 2
        else:
            jobs.preemptions[j] += 1
    if nrows:
        ledger._f.frombytes(rows_f[:nrows].tobytes())
        ledger._i.frombytes(rows_i[:nrows].tobytes())
        ledger.steps += int(rows_i[:nrows, 0].sum())
    state.taken(r)
    ledger.t, ledger.tc, ledger.step_avg, ledger.peak_w = t, tc, step_avg, peak_w
    server._fi, server._idle = fi, bool(idle)
    for name, value in zip(state.COUNTERS, state.counters(r), strict=True):
        setattr(server.engine, name, value)
    return len(ledger._i) >= ledger._full


class AloneReplica:
    """A server fed alone, run by the compiled loop; its state is the kernel's `Replica`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        feed_t = np.asarray(server._ftimes, dtype=float)  # the feed's buffers, not copies
        fj = server._fjobs
        feed_j = np.arange(fj.start, fj.stop, dtype=np.int64) if isinstance(fj, range) else np.asarray(fj, np.int64)
        self.r = build(server, feed_t, feed_j, feed_j.size)

    def run(self, events: int) -> bool:
        """Run up to `events` events; whether the feed is done."""
        while True:
            status, events = _compiling(run_alone, self.r, events, room(self.server))
            if drain(self.server, self.r):
                self.server.ledger._on_full()
            if status == FINISHED:
                return True
            if events <= 0:
                return False


class RoutedFleet:
    """Arrivals at `times_s` (sorted; job i arrives at times_s[i]) routed by `router` to `servers`
    (in index order, pool by pool), run to the end by `run`; `now` is the event clock (s)."""

    def __init__(self, servers: Sequence[Server], router: Router, times_s: np.ndarray, jobs: JobTable) -> None:
        assert fleet_fits(servers, router) and [s.index for s in servers] == list(range(len(servers)))
        from sim.routing import shared_above_idle_j  # it imports sim.server

        self.servers = list(servers)
        empty_t, empty_j = np.zeros(0), np.zeros(0, np.int64)
        self.reps = typed.List([build(s, empty_t, empty_j, len(jobs)) for s in self.servers])
        fleet = router.fleet
        names = [s.pool for s in self.servers]
        lo = np.array([names.index(p.name) for p in fleet.pools], dtype=np.int64)
        pools = (
            lo,
            lo + np.array([p.replicas for p in fleet.pools], dtype=np.int64),
            np.array([p.max_input_tokens or -1 for p in fleet.pools], dtype=np.int64),
            np.array([p.max_output_tokens or -1 for p in fleet.pools], dtype=np.int64),
            np.array([p.server.max_num_tokens or 0 for p in fleet.pools], dtype=np.int64),
            np.array([shared_above_idle_j(self.servers[k].costs) for k in lo]),
        )
        h = fleet.slo_headroom
        times = np.ascontiguousarray(times_s, dtype=float)
        self.f = new_fleet(
            router.kernel_code, times, jobs.server, len(self.servers), pools, h * fleet.slo.ttft_s, h * fleet.slo.tpot_s
        )

    @property
    def now(self) -> float:
        """The event clock (s): the time of the event under way, as `simpy.Environment.now`."""
        return float(now_s(self.f))

    def run(self, bar: Any = None) -> None:
        """Every event to the last: arrivals at their times, the replicas' steps and spans."""
        for s in self.servers:
            s._idle = s._waiting = True
        rooms = state_rooms(self.f)
        while True:
            rooms[:] = [room(s) for s in self.servers]
            status = _compiling(run_fleet, self.f, self.reps, PROGRESS_EVERY)
            due = [k for k, (s, r) in enumerate(zip(self.servers, self.reps, strict=True)) if drain(s, r)]
            for k in due:
                self.servers[k].ledger._on_full()
            if bar is not None:
                bar.update(max(min(round(self.now), bar.total) - bar.n, 0))
            if status == FLEET_DONE:
                return


def state_rooms(f: Any) -> np.ndarray:
    """The fleet's per-replica span-row limits (written in place before each run)."""
    from sim.kernel.fleet import rooms_of

    return rooms_of(f)  # type: ignore[no-any-return]


def _compiling(loop: Any, *args: Any) -> Any:
    """Call a compiled loop; the first call in a process that compiles it rather than loading
    it from the cache says so, with the time it took."""
    name = loop.__name__
    if name in _told:
        return loop(*args)
    start = time.perf_counter()
    out = loop(*args)
    _told.add(name)
    if sum(loop.stats.cache_misses.values()):
        log.info(
            "compiled the simulation kernel (%s) in %.1f s, cached in %s", name, time.perf_counter() - start, CACHE_DIR
        )
    return out

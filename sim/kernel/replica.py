"""The Python side of the kernel: servers run by compiled loops, their results moved back.

`AloneReplica` runs a `sim.serving.server.Server` fed alone (`sim.kernel.loop.run_alone`); `RoutedFleet`
runs a fleet whose router decides per arrival (`sim.kernel.fleet.run_fleet`). Each runs the
compiled `Replica` of each server's engine (`sim.kernel.engine.KernelEngine`), and after each run
moves what the kernel buffered into the Python objects (`drain`): span rows and the clock into
the server's `Ledger` (handing the log over when it is due), preemption counters into the
`JobTable`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numba import typed

from sim.engine.jobs import JobTable
from sim.kernel import CACHE_DIR, state
from sim.kernel.engine import SPAN_ROWS, KernelEngine, take_log
from sim.kernel.fleet import FINISHED as FLEET_DONE
from sim.kernel.fleet import new_fleet, now_s, rooms_of, run_fleet
from sim.kernel.loop import FINISHED, run_alone

if TYPE_CHECKING:
    from sim.serving.routing import Router
    from sim.serving.server import Server

log = logging.getLogger("sweetspot")

PROGRESS_EVERY = 4096  # arrival instants between two updates of a routed fleet's progress bar
_told: set[str] = set()


def fits(server: Server) -> bool:
    """Whether the kernel can run a server fed alone: the fast mode and nothing listening to it
    (the exact-steps reference, recorded step features and callbacks run in `Server._replay`)."""
    return _fast(server) and server.on_change is None


def fleet_fits(servers: Sequence[Server], router: Router) -> bool:
    """Whether `RoutedFleet` can run these replicas: a router with compiled picks (it reads the
    replicas itself, so their `on_change` is not called), plain `Server`s (a subclass may change
    its events) in the fast mode with no other listener, nothing fed to them."""
    from sim.serving.server import Server

    return router.kernel_code is not None and all(
        type(s) is Server and _fast(s) and not (s.alone or len(s._ftimes)) for s in servers
    )


def _fast(server: Server) -> bool:
    """The fast mode (no exact steps, no recorded features) and no completion or reject callback."""
    return not (server._exact or server._record) and server.on_finish is None and server.on_reject is None


def room(server: Server) -> int:
    """Span rows the kernel may buffer for the server before they move to its ledger: fewer than
    `SPAN_ROWS` when the ledger hands its log over sooner (`Ledger.hand_over`), so that the
    hand-over comes after the same span as with `Ledger.advance`."""
    ledger = server.ledger
    return max(min(SPAN_ROWS, (ledger._full - len(ledger._i) + 2) // 3), 1)


def drain(server: Server, r: state.Replica) -> bool:
    """Move the kernel's buffers into the server's ledger, the job table and the engine; whether
    its ledger's log is due to be handed over (the caller hands it over once all are drained)."""
    t, tc, step_avg, peak_w, fi, nrows, idle, missed = state.clock(r)
    ledger = server.ledger
    take_log(server.jobs, r)
    if nrows:
        rows_f, rows_i = state.take_rows(r)
        ledger._f.frombytes(rows_f.tobytes())
        ledger._i.frombytes(rows_i.tobytes())
        ledger.steps += int(rows_i[:, 0].sum())
    ledger.t, ledger.tc, ledger.step_avg, ledger.peak_w = t, tc, step_avg, peak_w
    ledger.missed += missed
    server._fi, server._idle = fi, bool(idle)
    return len(ledger._i) >= ledger._full


class AloneReplica:
    """A server fed alone, run by the compiled loop; its state is the kernel's `Replica`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        feed_t = np.asarray(server._ftimes, dtype=float)  # the feed's buffers, not copies
        fj = server._fjobs
        self.r = _replica(server)
        if isinstance(fj, range):  # consecutive jobs: no array of them
            assert fj.step == 1
            state.set_feed(self.r, feed_t, np.zeros(0, np.int64), fj.start)
        else:
            state.set_feed(self.r, feed_t, np.asarray(fj, np.int64), 0)

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
        from sim.serving.routing import shared_above_idle_j  # it imports sim.serving.server

        self.servers = list(servers)
        self.reps = typed.List([_replica(s) for s in self.servers])
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
            router.kernel_code,
            times,
            jobs.server,
            len(self.servers),
            pools,
            h * fleet.slo.ttft_s,
            h * fleet.slo.tpot_s,
            fleet.cache_balance,
        )

    @property
    def now(self) -> float:
        """The event clock (s): the time of the event under way, as `simpy.Environment.now`."""
        return float(now_s(self.f))

    def run(self, bar: Any = None) -> None:
        """Every event to the last: arrivals at their times, the replicas' steps and spans."""
        for s in self.servers:
            s._idle = s._waiting = True
        rooms = rooms_of(self.f)  # the per-replica span-row limits, written in place before each run
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


def _replica(server: Server) -> state.Replica:
    """The compiled replica of a server in the fast mode (its engine's)."""
    assert isinstance(server.engine, KernelEngine), "the exact-steps reference has no compiled replica"
    return server.engine.r


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

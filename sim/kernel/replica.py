"""The Python side of the kernel: a server fed alone run by the compiled loop, and what moves
the kernel's buffers back into a server's Python objects.

`AloneReplica` runs a server fed alone (`sim.kernel.loop.run_alone`); `sim.serving.routed.RoutedFleet`
runs a fleet whose router decides per arrival with the same pieces. Each runs the compiled
`Replica` of each server's engine (`sim.kernel.engine.KernelEngine`), and after each run moves
what the kernel buffered into the Python objects (`drain`): span rows and the clock into the
server's `Ledger` (handing the log over when it is due), preemption counters into the
`JobTable`. A server is read through `Fed`, what these take of `sim.serving.server.Server`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from sim.config import ServerConfig
from sim.engine.jobs import JobTable
from sim.engine.ledger import Ledger
from sim.kernel import CACHE_DIR, state
from sim.kernel.engine import SPAN_ROWS, KernelEngine, take_log
from sim.kernel.loop import FINISHED, run_alone

log = logging.getLogger("sweetspot")

_told: set[str] = set()


class Fed(Protocol):
    """What the kernel's glue reads and writes of a server (`sim.serving.server.Server`)."""

    ledger: Ledger
    feed_next: int
    idle: bool

    @property
    def jobs(self) -> JobTable: ...
    @property
    def engine(self) -> object: ...
    @property
    def feed_times(self) -> Sequence[float]: ...
    @property
    def feed_jobs(self) -> Sequence[int]: ...
    @property
    def config(self) -> ServerConfig: ...
    @property
    def on_finish(self) -> object: ...
    @property
    def on_reject(self) -> object: ...
    @property
    def on_change(self) -> object: ...


def fits(server: Fed) -> bool:
    """Whether the kernel can run a server fed alone: the fast mode and nothing listening to it
    (the exact-steps reference, recorded step features and callbacks run in `Server._replay`)."""
    return fast(server) and server.on_change is None


def fast(server: Fed) -> bool:
    """The fast mode (no exact steps, no recorded features) and no completion or reject callback."""
    return (
        not (server.config.exact_steps or server.config.record_features)
        and server.on_finish is None
        and server.on_reject is None
    )


def room(server: Fed) -> int:
    """Span rows the kernel may buffer for the server before they move to its ledger: fewer than
    `SPAN_ROWS` when the ledger hands its log over sooner (`Ledger.hand_over`), so that the
    hand-over comes after the same span as with `Ledger.advance`."""
    ledger = server.ledger
    return max(min(SPAN_ROWS, (ledger._full - len(ledger._i) + 2) // 3), 1)


def drain(server: Fed, r: state.Replica) -> bool:
    """Move the kernel's buffers into the server's ledger, the job table and the engine; whether
    its ledger's log is due to be handed over (the caller hands it over once all are drained)."""
    t, tc, step_avg, peak_w, fi, nrows, idle, missed = state.clock(r)
    ledger = server.ledger
    take_log(server.jobs, r)
    if nrows:
        rows_f, rows_i = state.take_rows(r)  # views of the kernel's buffer, copied once here
        ledger._f.frombytes(memoryview(rows_f).cast("B"))
        ledger._i.frombytes(memoryview(rows_i).cast("B"))
        ledger.steps += int(rows_i[:, 0].sum())
    ledger.t, ledger.tc, ledger.step_avg, ledger.peak_w = t, tc, step_avg, peak_w
    ledger.missed += missed
    server.feed_next, server.idle = fi, bool(idle)
    return len(ledger._i) >= ledger._full


class AloneReplica:
    """A server fed alone, run by the compiled loop; its state is the kernel's `Replica`."""

    def __init__(self, server: Fed) -> None:
        self.server = server
        feed_t = np.asarray(server.feed_times, dtype=float)  # the feed's buffers, not copies
        fj = server.feed_jobs
        self.r = replica_of(server)
        if isinstance(fj, range):  # consecutive jobs: no array of them
            assert fj.step == 1
            state.set_feed(self.r, feed_t, np.zeros(0, np.int64), fj.start)
        else:
            state.set_feed(self.r, feed_t, np.asarray(fj, np.int64), 0)

    def run(self, events: int) -> bool:
        """Run up to `events` events; whether the feed is done."""
        while True:
            status, events = compiling(run_alone, self.r, events, room(self.server))
            if drain(self.server, self.r):
                self.server.ledger._on_full()
            if status == FINISHED:
                return True
            if events <= 0:
                return False


def replica_of(server: Fed) -> state.Replica:
    """The compiled replica of a server in the fast mode (its engine's)."""
    assert isinstance(server.engine, KernelEngine), "the exact-steps reference has no compiled replica"
    return server.engine.r


def compiling(loop: Any, *args: Any) -> Any:
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

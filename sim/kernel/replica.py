"""The Python side of the kernel: a `sim.server.Server` fed alone, run by `sim.kernel.loop`.

`AloneReplica` builds the compiled `Replica` from the server's engine settings, scheduler, step
costs and feed on its first run, and after each run moves what the kernel buffered into the
Python objects: span rows into the server's `Ledger` (handing the log over when it is due),
preemption counters into the `JobTable`, and the counters a caller reads back into the `Engine`.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.jobs import JobTable
from sim.kernel import CACHE_DIR, state
from sim.kernel.loop import FINISHED, run_alone

if TYPE_CHECKING:
    from sim.server import Server

log = logging.getLogger("sweetspot")

SPAN_ROWS = 1024  # span rows the kernel buffers before they move to the ledger
_links: weakref.WeakKeyDictionary[JobTable, tuple[np.ndarray, ...]] = weakref.WeakKeyDictionary()
_compiled = False


def fits(server: Server) -> bool:
    """Whether the kernel can run the server: the fast mode and nothing listening to it (the
    exact-steps reference, recorded step features and callbacks run in `Server._replay`)."""
    listeners = (server.on_change, server.on_finish, server.on_reject)
    return not (server._exact or server._record) and all(f is None for f in listeners)


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


class AloneReplica:
    """A server fed alone, run by the compiled loop; its state is the kernel's `Replica`."""

    def __init__(self, server: Server) -> None:
        self.server = server
        e, kv, costs = server.engine, server.kv, server.costs
        feed_t = np.asarray(server._ftimes, dtype=float)  # the feed's buffers, not copies
        fj = server._fjobs
        feed_j = np.arange(fj.start, fj.stop, dtype=np.int64) if isinstance(fj, range) else np.asarray(fj, np.int64)
        seqs = max(1, min(e.max_seqs, feed_j.size))
        settings: dict[str, Any] = {
            "cap": e.cap, "bs": kv.block_size, "full": kv.full_units, "wunits": kv.window_units,
            "wblocks": kv.window_blocks, "fit": e._fit, "max_seqs": e.max_seqs, "max_tokens": e.max_tokens,
            "chunked": e.chunked, "reserve": e.reserve, "static": e.static,
            "requeue_front": e.scheduler.requeue_front, "admit_after": e.scheduler.admit_after_preemption,
            "has_limit": costs.power_limit_w is not None, "limit": costs.power_limit_w or 0.0,
            **e.scheduler.kernel_settings(),
        }  # fmt: skip
        ints = np.array([int(settings.get(k, 0)) for k in state.INT_SETTINGS], dtype=np.int64)
        floats = np.array([float(settings.get(k, 0.0)) for k in state.FLOAT_SETTINGS])
        self.r = state.new_replica(
            ints,
            floats,
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

    def run(self, events: int) -> bool:
        """Run up to `events` events; whether the feed is done."""
        ledger = self.server.ledger
        while True:
            room = max(min(SPAN_ROWS, (ledger._full - len(ledger._i) + 2) // 3), 1)
            status, events = _timed(self.r, events, room)
            self._drain()
            if status == FINISHED:
                return True
            if events <= 0:
                return False

    def _drain(self) -> None:
        """Move the kernel's buffers into the ledger, job table and engine."""
        server, r = self.server, self.r
        t, tc, step_avg, peak_w, fi, _, nrows, nlog = state.clock(r)
        rows_f, rows_i, plog = state.buffers(r)
        ledger, jobs = server.ledger, server.jobs
        if nlog:
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
        server._fi = fi
        for name, value in zip(state.COUNTERS, state.counters(r), strict=True):
            setattr(server.engine, name, value)
        if len(ledger._i) >= ledger._full:
            ledger._on_full()


def _timed(r: state.Replica, events: int, rows: int) -> tuple[int, int]:
    """`run_alone`, saying once per process how long compiling it took when it was not cached."""
    global _compiled
    if _compiled:
        return run_alone(r, events, rows)  # type: ignore[no-any-return]
    start = time.perf_counter()
    status = run_alone(r, events, rows)
    _compiled = True
    if sum(run_alone.stats.cache_misses.values()):
        log.info("compiled the simulation kernel in %.1f s (cached in %s)", time.perf_counter() - start, CACHE_DIR)
    return status

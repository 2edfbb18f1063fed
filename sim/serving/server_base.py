"""What a serving engine on one GPU holds, takes in and shows, apart from how its clock moves.

`ServerBase` holds a server's engine (batch formation: the compiled kernel's rules, or in the
exact-steps mode the simple reference `sim.engine.simple.SimpleEngine`), its
`sim.engine.ledger.Ledger` (the clock and span log), the pricing and closing of its steps
(`sim.serving.steps.Steps`) and its feed of jobs arriving at known times; it takes jobs in, tells
its listeners (`on_change`, `on_finish`, `on_reject`) and answers the snapshots routers and
results read. `sim.serving.server.Server` moves its clock: on SimPy
timeouts, or alone in one plain loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from sim.config import ServerConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import JobTable, ServerState
from sim.engine.kv import KvLayout
from sim.engine.ledger import Ledger, ServerStats
from sim.engine.simple import SimpleEngine
from sim.kernel.engine import KernelEngine
from sim.serving.steps import Steps

Callback = Callable[[int, float], None]
Notify = Callable[[], None]


class ServerBase:
    """A GPU serving one model: its engine, ledger, step pricing and feed, without a clock driver."""

    def __init__(
        self,
        costs: StepCosts,
        config: ServerConfig,
        jobs: JobTable,
        kv: KvLayout,
        *,
        index: int = 0,
        name: str = "server",
        pool: str = "main",
        on_finish: Callback | None = None,
        on_reject: Callback | None = None,
    ) -> None:
        self.costs, self.config, self.jobs = costs, config, jobs
        self.index, self.name, self.pool = index, name, pool
        self.kv = kv
        # the deliberately simple reference (exact steps) or the compiled kernel's rules
        self.engine: KernelEngine | SimpleEngine = (
            SimpleEngine(jobs, config, kv) if config.exact_steps else KernelEngine(jobs, config, kv, costs)
        )
        self.ledger = Ledger()
        self._exact = config.exact_steps
        self.steps = Steps(costs, self.engine, self.ledger, jobs, exact=self._exact, record=config.record_features)
        self.on_finish, self.on_reject = on_finish, on_reject
        self.on_change: Notify | None = None  # after the engine's load changes (a router's index listens)
        # the feed (`feed`): arrival times (s) and jobs, and the index of the next one not yet queued;
        # the compiled replica's glue reads them and hands `feed_next` and `idle` back after a run
        self.feed_times: Sequence[float] = ()
        self.feed_jobs: Sequence[int] = ()
        self.feed_next = 0
        self.idle = False  # waits for work: no step in progress
        self._alone = False

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of full-length KV the cache holds."""
        return self.kv.capacity_tokens

    @property
    def alone(self) -> bool:
        """Whether it was fed alone (runs ahead of the SimPy clock; see `feed`)."""
        return self._alone

    # --- inputs ------------------------------------------------------------------------
    def feed(
        self,
        times_s: Sequence[float] | np.ndarray,
        jobs: Sequence[int] | np.ndarray | range,
        *,
        alone: bool = False,
    ) -> None:
        """Jobs arriving at known times (s, sorted), read as the clock passes them (no events).

        `alone`: these are all the server's jobs and nothing else reads or wakes it while the
        environment runs (no `submit`, no callbacks), so it may simulate them ahead of the SimPy
        clock. Call before the environment runs.
        """
        times = np.ascontiguousarray(times_s, dtype=float)
        ids = jobs if isinstance(jobs, range) else np.ascontiguousarray(jobs, dtype=np.int64)
        if times.shape != (len(ids),) or np.any(np.diff(times) < 0):
            raise ValueError("a feed needs as many sorted arrival times as jobs")
        # read in place: item reads give Python floats and ints, with no per-job list of objects
        self.feed_times = times.data
        self.feed_jobs = ids if isinstance(ids, range) else ids.data
        self.feed_next = 0
        self._alone = alone
        if alone:  # what `_enqueue` writes, for the whole feed at once
            self.jobs.server[slice(ids.start, ids.stop) if isinstance(ids, range) else ids] = self.index

    def _enqueue(self, job: int, t: float) -> bool:
        self.jobs.server[job] = self.index
        if self.engine.enqueue(job):
            if self.on_change is not None:
                self.on_change()
            return True
        if self.on_reject is not None:
            self.on_reject(job, t)
        return False

    def _pull(self, limit: float) -> None:
        """Move feed arrivals up to time `limit` into the queue."""
        ft, i, n = self.feed_times, self.feed_next, len(self.feed_times)
        while i < n and ft[i] <= limit:
            self._enqueue(self.feed_jobs[i], ft[i])
            i += 1
        self.feed_next = i

    # --- outputs -----------------------------------------------------------------------
    def _closed(self, first: list[int], done: list[int]) -> None:
        """After a step or span closed (`Steps.end_mixed`, `Steps.end_decode`): tell the listeners,
        check the KV count in the exact mode, stamp the jobs that got their first token or are done."""
        if self.on_change is not None:
            self.on_change()
        if self._exact:
            self.steps.check_kv()
        if first or done:
            self._emit(first, done)

    def _emit(self, first: list[int], done: list[int]) -> None:
        """Stamp first tokens and completions with the clock; tell the fleet."""
        jobs, t = self.jobs, self.ledger.now
        for j in first:
            jobs.first_s[j] = t
        for j in done:
            jobs.finish_s[j] = t
            if self.on_finish is not None:
                self.on_finish(j, t)

    def state(self) -> ServerState:
        """Snapshot for policies and routers, as of the last step boundary."""
        e = self.engine
        return ServerState(
            e.queue_len,
            e.running,
            self.kv_free_tokens(),
            decoders=e.B,
            decode_ctx=e.S,
            outstanding_tokens=e.outstanding_tokens(),
            queued_kv_tokens=e.queued_need,
            queued_prompt_tokens=e.queued_prompt,
            last_finish_steps=e.last_finish_steps,
            recent_step_s=self.ledger.step_avg,
            state_kv_tokens=self.kv.state_tokens,
        )

    def kv_free_tokens(self) -> int:
        """Tokens of full-length KV the free cache holds, as of the last step boundary."""
        return self.kv.tokens(self.kv.capacity_units - self.engine.used)

    def outstanding_tokens(self) -> int:
        """Work left (tokens), as of the last step boundary (`SimpleEngine.outstanding_tokens`)."""
        return self.engine.outstanding_tokens()

    def stats(self) -> ServerStats:
        """Totals and span log so far."""
        e = self.engine
        return self.ledger.stats(self.name, self.pool, self.costs.idle_power_w, self.kv_capacity_tokens, e.preemptions)

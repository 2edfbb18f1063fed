"""One serving engine on one GPU as a thin SimPy process: it waits, wakes and moves the clock.

Batch formation (admission, KV accounting, preemption) is `sim.engine.Engine`; time and energy
of steps are `sim.costs`; the clock and span log are `sim.ledger.Ledger`. Only batch-changing
events wake the process: a step that prefills or preempts, the next completion, a window that
fills, a KV shortage, and an arrival that could join. Between them the decoders advance k steps
at once, their time and energy being arithmetic series (`sim.costs.span`). A request's share of
the shared step cost is the difference of one running sum taken when it joins and leaves the
batch. `exact_steps=True` runs one step per event and charges every sequence explicitly: the
reference the fast mode is tested against. A server fed all its jobs up front
(`feed(..., alone=True)`) needs no other process: it runs its events in one plain loop
(`_replay`; in the fast mode with no listener, its copy with the common events inlined,
`sim.replay.replay`), ahead of the SimPy clock, and its process wakes once, at its last event.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import simpy

from sim.config import ServerConfig
from sim.costs import StepCosts, mixed_step, prefill_sums
from sim.engine import Engine, Prefill
from sim.jobs import JobTable, ServerState
from sim.kv import KvLayout
from sim.ledger import Ledger, ServerStats
from sim.replay import fits, replay

Callback = Callable[[int, float], None]
Notify = Callable[[], None]

__all__ = ["Server", "ServerStats"]


class Server:
    """A GPU serving one model; jobs come from a pre-sorted `feed` and/or `submit` (a router)."""

    def __init__(
        self,
        env: simpy.Environment,
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
        self.env, self.costs, self.config, self.jobs = env, costs, config, jobs
        self.index, self.name, self.pool = index, name, pool
        self.kv = kv
        self.engine = Engine(jobs, config, kv)
        self.ledger = Ledger()
        self.on_finish, self.on_reject = on_finish, on_reject
        self.on_change: Notify | None = None  # after the engine's load changes (a router's index listens)
        self._ftimes: Sequence[float] = ()
        self._fjobs: Sequence[int] = ()
        self._fi = 0
        self._waiting = self._interrupted = self._idle = self._alone = False
        self._exact, self._record = config.exact_steps, config.record_features
        self._proc = env.process(self._run())

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of full-length KV the cache holds."""
        return self.kv.capacity_tokens

    @property
    def alone(self) -> bool:
        """Whether it was fed alone (runs ahead of the SimPy clock; see `feed`)."""
        return self._alone

    @property
    def idle(self) -> bool:
        """Whether it waits for work (no step in progress)."""
        return self._idle

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
        self._ftimes = times.data
        self._fjobs = ids if isinstance(ids, range) else ids.data
        self._fi = 0
        self._alone = alone
        if alone:  # what `_enqueue` writes, for the whole feed at once
            self.jobs.server[slice(ids.start, ids.stop) if isinstance(ids, range) else ids] = self.index

    def submit(self, job: int, t_s: float | None = None) -> None:
        """Hand a job to the server at time t_s (default: now); wakes it if it can start it."""
        if self._alone:
            raise RuntimeError(f"{self.name} was fed alone=True: nothing may submit jobs to it")
        t = self.env.now if t_s is None else t_s
        self._pull(t)
        room = self.engine.accepts_arrivals()
        if not self._enqueue(job, t) or not self._waiting or self._interrupted:
            return
        if self._idle or room:
            self._interrupted = True
            self._proc.interrupt(t)

    def state(self) -> ServerState:
        """Snapshot for policies and routers, as of the last step boundary."""
        e = self.engine
        return ServerState(
            len(e.queue),
            len(e.order),
            self.kv.tokens(self.kv.capacity_units - e.used),
            decoders=e.B,
            decode_ctx=e.S,
            outstanding_tokens=e.outstanding_tokens(),
            queued_kv_tokens=e.queued_need,
            queued_prompt_tokens=e.queued_prompt,
            last_finish_steps=e.last_finish_steps,
            recent_step_s=self.ledger.step_avg,
        )

    def outstanding_tokens(self) -> int:
        """Work left (tokens), as of the last step boundary (`Engine.outstanding_tokens`)."""
        return self.engine.outstanding_tokens()

    def stats(self) -> ServerStats:
        """Totals and span log so far."""
        e = self.engine
        return self.ledger.stats(self.name, self.pool, self.costs.idle_power_w, self.kv_capacity_tokens, e.preemptions)

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
        ft, i, n = self._ftimes, self._fi, len(self._ftimes)
        while i < n and ft[i] <= limit:
            self._enqueue(self._fjobs[i], ft[i])
            i += 1
        self._fi = i

    # --- the process --------------------------------------------------------------------
    def _run(self) -> Generator[Any, Any, None]:
        e = self.engine
        if self._alone:
            if fits(self):
                replay(self)  # `_replay` with its common events inlined
            else:
                self._replay()
            yield self.env.timeout(max(self.ledger.now - self.env.now, 0.0))
            return
        while True:
            self._pull(self.ledger.now)
            if e.can_span():
                yield from self._decode()
            elif e.B or e.partial is not None or e.queue:
                yield from self._mixed(e.form_step(self.ledger.now))
            else:
                yield from self._wait_idle()

    def _replay(self) -> None:
        """Every event of the feed, one after the other, without SimPy (the server is alone)."""
        e, ledger, exact = self.engine, self.ledger, self._exact
        ft, fj, n, fi = self._ftimes, self._fjobs, len(self._ftimes), self._fi
        can_span, enqueue, end_decode, span_steps = e.can_span, e.enqueue, self._end_decode, self._span_steps
        while True:
            now = ledger.t + ledger.tc
            while fi < n and ft[fi] <= now:  # `_pull`, with the server written by `feed`
                if not enqueue(fj[fi]) and self.on_reject is not None:
                    self.on_reject(fj[fi], ft[fi])
                fi += 1
            self._fi = fi
            if can_span():
                B, S = e.B, e.S
                end_decode(B, S, 1 if exact else span_steps(B, S, now))
            elif e.B or e.partial is not None or e.queue:
                work = e.form_step(now)
                self._end_mixed(work, *self._mixed_cost(work))
            elif fi < n:
                ledger.jump(ft[fi])
            else:
                return

    def _sleep(self, until: float | None) -> Generator[Any, Any, float | None]:
        """Sleep to clock time `until` (None: until woken); returns the waking submit's time."""
        env = self.env
        self._waiting = True
        try:
            if until is None:
                yield env.event()
            else:
                yield env.timeout(max(until - env.now, 0.0))
            woke = None
        except simpy.Interrupt as interrupt:
            woke = interrupt.cause
        self._waiting = self._interrupted = False
        return woke

    def _wait_idle(self) -> Generator[Any, Any, None]:
        self._idle = True
        nxt = self._ftimes[self._fi] if self._fi < len(self._ftimes) else None
        woke = yield from self._sleep(nxt)
        self._idle = False
        start = woke if woke is not None else nxt
        assert start is not None
        self.ledger.jump(start)
        self._pull(start)

    def _mixed(self, work: Prefill) -> Generator[Any, Any, None]:
        """One step that prefills `work` (and decodes the running decoders)."""
        if self.on_change is not None:
            self.on_change()  # form_step may have preempted
        dt, de = self._mixed_cost(work)
        end = self.ledger.now + dt
        while (yield from self._sleep(end)) is not None:
            pass  # a step is atomic: arrivals wait for its end
        self._end_mixed(work, dt, de)

    def _mixed_cost(self, work: Prefill) -> tuple[float, float]:
        """Time (s) and energy (J) of the step that prefills `work`."""
        e = self.engine
        assert e.B or work, "a step with nothing to run"
        return self._exact_step(work) if self._exact else self.costs.mixed(e.B, e.S, work)

    def _end_mixed(self, work: Prefill, dt: float, de: float) -> None:
        """Close the step that prefilled `work`: engine, ledger and job times."""
        e = self.engine
        B = e.B
        running = B + len(work)
        if self._record:
            tokens, attn = prefill_sums(work)
            self.ledger.record((1, B, e.S, len(work), tokens, attn))
        first, done = e.finish_step(work)
        self.ledger.advance(dt, de, 1, _power(de, dt), running, B + e.prefilled, e.used / e.cap)
        if self.on_change is not None:
            self.on_change()
        if self._exact:
            self._check_kv()
        if first or done:
            self._emit(first, done)

    def _span_steps(self, B: int, S: int, t0: float) -> int:
        """Steps of the next plain decode span: to the engine's limit or the next feed arrival
        that could join."""
        e = self.engine
        k = e.span_limit()
        if k > 1 and self._fi < len(self._ftimes) and e.accepts_arrivals():
            reach = self.costs.steps_to_reach(B, S, self._ftimes[self._fi] - t0)
            if reach < k:
                return reach
        return k

    def _decode(self) -> Generator[Any, Any, None]:
        """Advance the decoders to the next boundary: completion, window, KV shortage or arrival."""
        e, c = self.engine, self.costs
        B, S = e.B, e.S
        t0 = self.ledger.now
        k = 1 if self._exact else self._span_steps(B, S, t0)
        while True:
            woke = yield from self._sleep(t0 + c.span_s(B, S, k))
            if woke is None:
                break
            k = min(k, c.steps_to_reach(B, S, woke - t0))
        self._end_decode(B, S, k)

    def _end_decode(self, B: int, S: int, k: int) -> None:
        """Close a span of k plain decode steps of B decoders whose contexts summed to S."""
        if self._exact:
            dt, de = self._exact_step([])
            peak = _power(de, dt)
        else:
            dt, de, peak = self.costs.decode(B, S, k)
        if self._record:
            self.ledger.record((k, B * k, k * S + B * k * (k - 1) // 2, 0, 0, 0))
        e = self.engine
        done = e.run_span(k)
        self.ledger.advance(dt, de, k, peak, B, B * k, e.used / e.cap)
        if self.on_change is not None:
            self.on_change()
        if self._exact:
            self._check_kv()
        if done:
            self._emit([], done)

    def _check_kv(self) -> None:
        e = self.engine
        assert e.kv_units_explicit() == e.used, "incremental KV count diverged from the explicit one"

    def _emit(self, first: list[int], done: list[int]) -> None:
        """Stamp first tokens and completions with the clock; tell the fleet."""
        jobs, t = self.jobs, self.ledger.now
        for j in first:
            jobs.first_s[j] = t
        for j in done:
            jobs.finish_s[j] = t
            if self.on_finish is not None:
                self.on_finish(j, t)

    # --- the reference: one step, every sequence charged explicitly ---------------------
    def _exact_step(self, work: Prefill) -> tuple[float, float]:
        """Features of the coming step from each sequence's own state; charges each its energy."""
        jobs, e, ce = self.jobs, self.engine, self.costs.energy_j
        dec = e.decoder_contexts()
        ctx = sum(c for _, c in dec)
        assert ctx == e.S, "incremental context sum diverged from the explicit one"
        share = ce.const / (len(dec) + len(work))
        for j, c in dec:
            jobs.energy_j[j] += ce.decode_seqs + ce.decode_ctx * c + share
        for j, m, past in work:
            attn = m * past + m * (m + 1) // 2
            jobs.energy_j[j] += ce.prefill_seqs + ce.prefill_tokens * m + ce.prefill_attn * attn + share
        de = mixed_step(ce, len(dec), ctx, work)
        return self.costs.capped(mixed_step(self.costs.time_s, len(dec), ctx, work), de), de


def _power(energy_j: float, time_s: float) -> float:
    """Mean power (W) of a step; 0 for a step the oracle says takes no time."""
    return energy_j / time_s if time_s > 0.0 else 0.0

"""One serving engine on one GPU as a thin SimPy process: it waits, wakes and moves the clock.

Batch formation (admission, KV accounting, preemption) is `sim.engine.Engine`; time and energy
of steps are `sim.costs`; the clock and span log are `sim.ledger.Ledger`. Only batch-changing
events wake the process: a step that prefills or preempts, the next completion, a window that
fills, a KV shortage, and an arrival that could join. Between them the decoders advance k steps
at once, their time and energy being arithmetic series (`sim.costs.span`). A request's share of
the shared step cost is the difference of one running sum taken when it joins and leaves the
batch. `exact_steps=True` runs one step per event and charges every sequence explicitly: the
reference the fast mode is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import numpy as np
import simpy

from sim.config import ServerConfig
from sim.costs import StepCosts, mixed_step, span
from sim.engine import Engine, Prefill
from sim.jobs import JobTable, ServerState
from sim.kv import KvLayout
from sim.ledger import Ledger, ServerStats

Callback = Callable[[int, float], None]

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
        self._ftimes: Sequence[float] = ()
        self._fjobs: Sequence[int] = ()
        self._fi = 0
        self._waiting = self._interrupted = self._idle = False
        self._proc = env.process(self._run())

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens of full-length KV the cache holds."""
        return self.kv.capacity_tokens

    @property
    def idle(self) -> bool:
        """Whether it waits for work (no step in progress)."""
        return self._idle

    # --- inputs ------------------------------------------------------------------------
    def feed(self, times_s: Sequence[float] | np.ndarray, jobs: Sequence[int] | np.ndarray | range) -> None:
        """Jobs arriving at known times (s, sorted), read as the clock passes them (no events).

        Call before the environment runs.
        """
        times = np.ascontiguousarray(times_s, dtype=float)
        ids = jobs if isinstance(jobs, range) else np.ascontiguousarray(jobs, dtype=np.int64)
        if times.shape != (len(ids),) or np.any(np.diff(times) < 0):
            raise ValueError("a feed needs as many sorted arrival times as jobs")
        # read in place: item reads give Python floats and ints, with no per-job list of objects
        self._ftimes = times.data
        self._fjobs = ids if isinstance(ids, range) else ids.data
        self._fi = 0

    def submit(self, job: int, t_s: float | None = None) -> None:
        """Hand a job to the server at time t_s (default: now); wakes it if it can start it."""
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
        while True:
            self._pull(self.ledger.now)
            if e.can_span():
                yield from self._decode()
            elif e.B or e.partial is not None or e.queue:
                yield from self._mixed(e.form_step(self.ledger.now))
            else:
                yield from self._wait_idle()

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
        e, c = self.engine, self.costs
        assert e.B or work, "a step with nothing to run"
        if self.config.exact_steps:
            dt, de = self._exact_step(work)
        else:
            de = mixed_step(c.energy_j, e.B, e.S, work)
            dt = c.capped(mixed_step(c.time_s, e.B, e.S, work), de)
        end = self.ledger.now + dt
        while (yield from self._sleep(end)) is not None:
            pass  # a step is atomic: arrivals wait for its end
        emitted = e.B + sum(1 for j, m, past in work if past + m >= e.target(j))
        running = e.B + len(work)
        if self.config.record_features:
            attn = sum(m * past + m * (m + 1) // 2 for _, m, past in work)
            self.ledger.record((1, e.B, e.S, len(work), sum(m for _, m, _ in work), attn))
        first, done = e.finish_step(work)
        self._log(dt, de, 1, _power(de, dt), running, emitted)
        self._emit(first, done)

    def _decode(self) -> Generator[Any, Any, None]:
        """Advance the decoders to the next boundary: completion, window, KV shortage or arrival."""
        e, c = self.engine, self.costs
        B, S = e.B, e.S
        t0 = self.ledger.now
        k = 1 if self.config.exact_steps else e.span_limit()
        if k > 1 and self._fi < len(self._ftimes) and e.accepts_arrivals():
            k = min(k, c.steps_to_reach(B, S, self._ftimes[self._fi] - t0))
        while True:
            woke = yield from self._sleep(t0 + c.span_s(B, S, k))
            if woke is None:
                break
            k = min(k, c.steps_to_reach(B, S, woke - t0))
        if self.config.exact_steps:
            dt, de = self._exact_step([])
            peak = _power(de, dt)
        else:
            dt, de, peak = self._span_cost(B, S, k)
        if self.config.record_features:
            self.ledger.record((k, B * k, k * S + B * k * (k - 1) // 2, 0, 0, 0))
        done = e.run_span(k)
        self._log(dt, de, k, peak, B, B * k)
        self._emit([], done)

    def _span_cost(self, B: int, S: int, k: int) -> tuple[float, float, float]:
        """Time (s), energy (J) and peak step power (W) of k decode steps."""
        c = self.costs
        ce = c.energy_j
        last = S + (k - 1) * B  # step power is monotone in k: the peak is at an end
        p_first = _power(span(ce, B, S, 1), c.span_s(B, S, 1))
        p_last = _power(span(ce, B, last, 1), c.span_s(B, last, 1))
        return c.span_s(B, S, k), span(ce, B, S, k), max(p_first, p_last)

    def _log(self, dt: float, de: float, steps: int, peak_w: float, running: int, tokens: int) -> None:
        e = self.engine
        self.ledger.advance(dt, de, steps, peak_w, running, tokens, e.used / self.kv.capacity_units)
        if self.config.exact_steps:
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

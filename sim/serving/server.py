"""One serving engine on one GPU as a small state machine on SimPy timeouts: it waits, wakes
and moves the clock.

Batch formation (admission, KV accounting, preemption) is `sim.engine.reference.Engine`; time and energy
of steps are `sim.engine.costs`; the clock and span log are `sim.engine.ledger.Ledger`. Only batch-changing
events wake the server: a step that prefills or preempts, the next completion, a window that
fills, a KV shortage, and an arrival that could join. Between them the decoders advance k steps
at once, their time and energy being arithmetic series (`sim.kernel.linear.span`). A request's share of
the shared step cost is the difference of one running sum taken when it joins and leaves the
batch. `exact_steps=True` runs one step per event and charges every sequence explicitly: the
reference the fast mode is tested against.

Each wait is one timeout whose callback closes the step or span and starts the next (no
generator process). A submit that must wake a waiting server (`offer`) is taken by `wake` right
after the event that made it, before any other event of that time: an urgent event for
`submit`, or the dispatcher's own call at the end of its callback. Same-time arrivals thus all
join the step the woken server forms, and a cut decode span leaves its old timeout to ring in
vain. A server fed all its jobs up front (`feed(..., alone=True)`) needs no other event: it runs
its events in one plain loop (`replay`: in the fast mode with no listener the compiled kernel,
`sim.kernel`, else `_replay`), ahead of the SimPy clock, and its clock's last event is one timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import simpy
from simpy.events import URGENT, Timeout

from sim.config import ServerConfig
from sim.engine.costs import StepCosts, prefill_sums
from sim.engine.jobs import JobTable, ServerState
from sim.engine.kv import KvLayout
from sim.engine.ledger import Ledger, ServerStats
from sim.engine.reference import Engine, Prefill
from sim.kernel.engine import KernelEngine
from sim.kernel.replica import AloneReplica, fits

Callback = Callable[[int, float], None]
Notify = Callable[[], None]
_IDLE, _DECODE, _MIXED = 0, 1, 2  # what a server's wait ends

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
        # the step-by-step reference (exact steps, recorded features) or the compiled kernel's rules
        exact = config.exact_steps or config.record_features
        self.engine: Engine | KernelEngine = (
            Engine(jobs, config, kv) if exact else KernelEngine(jobs, config, kv, costs)
        )
        self.ledger = Ledger()
        self.on_finish, self.on_reject = on_finish, on_reject
        self.on_change: Notify | None = None  # after the engine's load changes (a router's index listens)
        self._ftimes: Sequence[float] = ()
        self._fjobs: Sequence[int] = ()
        self._fi = 0
        self._waiting = self._interrupted = self._idle = self._alone = False
        self._kernel: AloneReplica | None = None  # the compiled replica of a server fed alone
        self._exact, self._record = config.exact_steps, config.record_features
        # the wait under way: its timer (a stale one rings in vain) and what it ends: an idle wait
        # (to the feed's next arrival, or None), a decode span (B decoders whose contexts summed to
        # S, from t0 s, k steps) or a mixed step (its work, time s, energy J, end s). In two
        # tuples: with 33 attributes (one per value) every attribute read of a server was slower,
        # CPython sharing instance-dict keys only up to about 30 (round_robin's replay lost ~2 %).
        self._timer: simpy.Event | None = None
        self._phase = _IDLE
        self._nxt: float | None = None
        self._span: tuple[int, int, float, int, float, int] = (0, 0, 0.0, 0, 0.0, -1)  # ..., budget (s), held level
        self._held: tuple[int, float] = (0, 0.0)  # the clock controller's held ladder level, and until when (s)
        self._step: tuple[Prefill, float, float, float, float, float] = ([], 0.0, 0.0, 0.0, 0.0, 0.0)
        _urgent(env, self._start)

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
        """Hand a job to the server at time t_s (default: now); wakes it if it can start it: at
        once after the calling event, before any other event of this time (as an interrupt)."""
        t = self.env.now if t_s is None else t_s
        if self.offer(job, t):
            _urgent(self.env, lambda _: self.wake(t))

    def offer(self, job: int, t_s: float) -> bool:
        """`submit` without the wake-up: True if the server must be woken by `wake(t_s)`, which
        the caller does once its event has made all its submits (before any other event)."""
        if self._alone:
            raise RuntimeError(f"{self.name} was fed alone=True: nothing may submit jobs to it")
        if self._fi < len(self._ftimes):
            self._pull(t_s)
        room = self.engine.accepts_arrivals()
        if not self._enqueue(job, t_s) or not self._waiting or self._interrupted:
            return False
        self._interrupted = self._idle or room
        return self._interrupted

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
        )

    def kv_free_tokens(self) -> int:
        """Tokens of full-length KV the free cache holds, as of the last step boundary."""
        return self.kv.tokens(self.kv.capacity_units - self.engine.used)

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

    # --- the state machine -------------------------------------------------------------
    def _start(self, _: simpy.Event) -> None:
        """The server's first event (urgent, at time 0, as a process would start)."""
        if self._alone:
            self.replay()
            self.env.timeout(max(self.ledger.now - self.env.now, 0.0))  # the SimPy clock ends at its last event
            return
        self._next()

    def _next(self) -> None:
        """Start what comes next at the server's clock: a decode span, a mixed step or a wait."""
        e, ledger = self.engine, self.ledger
        now = ledger.now
        if self._fi < len(self._ftimes):
            self._pull(now)
        if e.can_span():
            B, S, budget = e.B, e.S, self.costs.budget_for(e.queue_len)
            floor = self._hold(now, B, S, 0, 0, 0)
            if self._exact:
                k = 1
            else:
                k = e.span_limit() if self._fi == len(self._ftimes) else self._span_steps(B, S, now, budget, floor)
            self._phase = _DECODE
            self._span = (B, S, now, k, budget, floor)
            self._sleep(now + self.costs.span_s(B, S, k, budget, floor))
        elif e.busy():
            self._start_mixed(e.form_step(now))
        else:
            self._start_idle()

    def replay(self, events: int = 1 << 62) -> bool:
        """Run up to `events` more events of a server fed alone, ahead of the SimPy clock (a
        fleet's plain loop interleaves its servers so); whether it has run them all."""
        if not self._alone:
            raise RuntimeError(f"{self.name} was not fed alone=True: its events run under SimPy")
        if not fits(self):
            return self._replay(events)
        if self._kernel is None:
            self._kernel = AloneReplica(self)
        return self._kernel.run(events)

    def _replay(self, events: int = 1 << 62) -> bool:
        """The feed's events, one after the other, without SimPy (the server is alone), up to
        `events` of them; whether it has run them all."""
        e, ledger, exact = self.engine, self.ledger, self._exact
        ft, fj, n, fi = self._ftimes, self._fjobs, len(self._ftimes), self._fi
        can_span, enqueue, end_decode, span_steps = e.can_span, e.enqueue, self._end_decode, self._span_steps
        while True:
            if events <= 0:
                return False
            events -= 1
            now = ledger.t + ledger.tc
            while fi < n and ft[fi] <= now:  # `_pull`, with the server written by `feed`
                if not enqueue(fj[fi]) and self.on_reject is not None:
                    self.on_reject(fj[fi], ft[fi])
                fi += 1
            self._fi = fi
            if can_span():
                B, S, budget = e.B, e.S, self.costs.budget_for(e.queue_len)
                floor = self._hold(now, B, S, 0, 0, 0)
                end_decode(B, S, 1 if exact else span_steps(B, S, now, budget, floor), budget, floor)
            elif e.busy():
                work = e.form_step(now)
                self._end_mixed(work, *self._mixed_cost(work))
            elif fi < n:
                ledger.jump(ft[fi])
            else:
                return True

    def _sleep(self, until: float) -> None:
        """Wait to clock time `until` (s): `_ring` runs then, unless a wake-up comes first."""
        env = self.env
        self._waiting = True
        timer = self._timer = Timeout(env, max(until - env.now, 0.0))
        timer.callbacks.append(self._ring)

    def _ring(self, timer: simpy.Event) -> None:
        """The wait ended (a timer cut short by a wake-up is stale and ignored): close the step or
        span, or take the feed's next arrival, and go on."""
        if timer is not self._timer:
            return
        self._timer = None
        self._waiting = False
        phase = self._phase
        if phase == _DECODE:
            B, S, _, k, budget, floor = self._span
            self._end_decode(B, S, k, budget, floor)
        elif phase == _MIXED:
            work, dt, de, extra, mhz, _ = self._step
            self._end_mixed(work, dt, de, extra, mhz)
        else:
            self._resume_idle(self._nxt)
        self._next()

    def wake(self, t_s: float) -> None:
        """Take the submit of time t_s (s) that `offer` said must wake the waiting server: an idle
        one starts, a decode span is cut at the first step boundary after it, a mixed step runs
        to its end."""
        self._waiting = self._interrupted = False
        phase = self._phase
        if phase == _DECODE:
            B, S, t0, k, budget, floor = self._span
            k = min(k, self.costs.steps_to_reach(B, S, t_s - t0, budget, floor))
            self._span = (B, S, t0, k, budget, floor)
            self._sleep(t0 + self.costs.span_s(B, S, k, budget, floor))
        elif phase == _MIXED:
            self._sleep(self._step[5])  # a step is atomic: arrivals wait for its end
        else:
            self._timer = None
            self._resume_idle(t_s)
            self._next()

    def _start_idle(self) -> None:
        """Wait for work: to the feed's next arrival, or until a submit wakes the server."""
        self._idle = True
        self._phase = _IDLE
        nxt = self._nxt = self._ftimes[self._fi] if self._fi < len(self._ftimes) else None
        if nxt is None:
            self._waiting = True
        else:
            self._sleep(nxt)

    def _resume_idle(self, start: float | None) -> None:
        """Leave the idle wait at time `start` (s): move the clock there and take the arrivals."""
        self._idle = False
        assert start is not None
        self.ledger.jump(start)
        self._pull(start)

    def _start_mixed(self, work: Prefill) -> None:
        """One step that prefills `work` (and decodes the running decoders)."""
        if self.on_change is not None:
            self.on_change()  # form_step may have preempted
        dt, de, extra, mhz = self._mixed_cost(work)
        self._phase = _MIXED
        end = self.ledger.now + dt
        self._step = (work, dt, de, extra, mhz, end)
        self._sleep(end)

    def _mixed_cost(self, work: Prefill) -> tuple[float, float, float, float]:
        """Time (s), energy (J), `extra` and SM clock (MHz) (`StepCosts.step`) of the step that
        prefills `work`."""
        e = self.engine
        assert e.B or work, "a step with nothing to run"
        budget = self.costs.budget_for(e.queue_len)
        floor = self._hold(self.ledger.now, e.B, e.S, len(work), *prefill_sums(work))
        return self._exact_step(work, budget, floor) if self._exact else self.costs.mixed(e.B, e.S, work, budget, floor)

    def _hold(self, now: float, *x: int) -> int:
        """The ladder level the clock controller holds for a step or span with features `x` that
        starts at `now` (s): the one it wants (`StepCosts.wanted_level`), switched to only when the
        last switch is at least `StepCosts.switch_s` old; −1 (it switches at every step) without a
        switch latency or a controller (`sim.kernel.levels.hold`)."""
        c = self.costs
        if c.switch_s <= 0.0 or c.step_budget_s <= 0.0:
            return -1
        level, until = self._held
        want = c.wanted_level(c.budget_for(self.engine.queue_len), *x)
        if want != level and now >= until:
            level, until = self._held = (want, now + c.switch_s)
        return level

    def _end_mixed(self, work: Prefill, dt: float, de: float, extra: float, mhz: float) -> None:
        """Close the step that prefilled `work`, of dt s and de J at `mhz` MHz: engine, ledger and
        job times."""
        e = self.engine
        B = e.B
        running = B + len(work)
        if self._record:
            tokens, attn = prefill_sums(work)
            self.ledger.record((1, B, e.S, len(work), tokens, attn))
        first, done = e.finish_step(work, extra)
        self.ledger.advance(dt, de, 1, _power(de, dt), running, B + e.prefilled, e.used / e.cap, mhz * dt)
        if self.on_change is not None:
            self.on_change()
        if self._exact:
            self._check_kv()
        if first or done:
            self._emit(first, done)

    def _span_steps(self, B: int, S: int, t0: float, budget: float, floor: int) -> int:
        """Steps of the next plain decode span: to the engine's limit or the next feed arrival
        that could join."""
        e = self.engine
        k = e.span_limit()
        if k > 1 and self._fi < len(self._ftimes) and e.accepts_arrivals():
            reach = self.costs.steps_to_reach(B, S, self._ftimes[self._fi] - t0, budget, floor)
            if reach < k:
                return reach
        return k

    def _end_decode(self, B: int, S: int, k: int, budget: float, floor: int) -> None:
        """Close a span of k plain decode steps of B decoders whose contexts summed to S."""
        if self._exact:
            dt, de, extra, mhz = self._exact_step([], budget, floor)
            peak, mhz_s = _power(de, dt), mhz * dt
        else:
            dt, de, peak, extra, mhz_s = self.costs.decode(B, S, k, budget, floor)
        if self._record:
            self.ledger.record((k, B * k, k * S + B * k * (k - 1) // 2, 0, 0, 0))
        self.ledger.missed += self.costs.missed(B, S, k, budget)
        e = self.engine
        done = e.run_span(k, extra)
        self.ledger.advance(dt, de, k, peak, B, B * k, e.used / e.cap, mhz_s)
        if self.on_change is not None:
            self.on_change()
        if self._exact:
            self._check_kv()
        if done:
            self._emit([], done)

    def _check_kv(self) -> None:
        e = self.engine
        assert isinstance(e, Engine)
        assert e.kv_units_explicit() == e.used, "incremental KV count diverged from the explicit one"
        assert e.used + len(e.idle_blocks) * e.bu <= e.cap, "cached blocks and KV held exceed the cache"

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
    def _exact_step(self, work: Prefill, budget: float, floor: int = -1) -> tuple[float, float, float, float]:
        """Features of the coming step from each sequence's own state; charges each its energy:
        its own terms, and an equal share of the step's constant and of the energy a power cap's
        lower clock changed (`StepCosts.step`). Returns (time s, energy J, extra, clock MHz)."""
        jobs, e, ce = self.jobs, self.engine, self.costs.energy_j
        assert isinstance(e, Engine)
        dec = e.decoder_contexts()
        ctx = sum(c for _, c in dec)
        assert ctx == e.S, "incremental context sum diverged from the explicit one"
        dt, de, extra, mhz = self.costs.step(len(dec), ctx, len(work), *prefill_sums(work), budget, floor)
        share = ce.const * (1.0 + extra) / (len(dec) + len(work))
        for j, c in dec:
            jobs.energy_j[j] += ce.decode_seqs + ce.decode_ctx * c + share
        for j, m, past in work:
            attn = m * past + m * (m + 1) // 2
            jobs.energy_j[j] += ce.prefill_seqs + ce.prefill_tokens * m + ce.prefill_attn * attn + share
        return dt, de, extra, mhz


def _power(energy_j: float, time_s: float) -> float:
    """Mean power (W) of a step; 0 for a step the oracle says takes no time."""
    return energy_j / time_s if time_s > 0.0 else 0.0


def _urgent(env: simpy.Environment, callback: Callable[[simpy.Event], None]) -> None:
    """Run `callback` at the current time before any other event of that time, after those
    already urgent (as SimPy starts and interrupts processes)."""
    event = simpy.Event(env)
    event._ok, event._value = True, None
    event.callbacks.append(callback)
    env.schedule(event, URGENT)

"""One serving engine on one GPU as a small state machine on SimPy timeouts: it waits, wakes
and moves the clock.

What the server holds, takes in and shows is `sim.serving.server_base.ServerBase`; batch formation
(admission, KV accounting, preemption) is the compiled kernel's (`sim.kernel.engine.KernelEngine`;
in the exact-steps mode the simple reference `sim.engine.simple.SimpleEngine`); the price of steps and their
closing are `sim.serving.steps.Steps`; the clock and span log are `sim.engine.ledger.Ledger`. Only
batch-changing events wake the server: a step that prefills or preempts, the next completion, a
window that fills, a KV shortage, and an arrival that could join. Between them the decoders advance
k steps at once, their time and energy being arithmetic series (`sim.kernel.linear.span`).
`exact_steps=True` runs one step per event: the reference the fast mode is tested against.

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

from collections.abc import Callable

import simpy
from simpy.events import URGENT, Timeout

from sim.config import ServerConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import JobTable, Prefill
from sim.engine.kv import KvLayout
from sim.kernel.replica import AloneReplica, fits
from sim.serving.server_base import Callback, ServerBase

_IDLE, _DECODE, _MIXED = 0, 1, 2  # what a server's wait ends


class Server(ServerBase):
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
        self.env = env
        super().__init__(
            costs, config, jobs, kv, index=index, name=name, pool=pool, on_finish=on_finish, on_reject=on_reject
        )
        self._waiting = self._interrupted = False
        self._kernel: AloneReplica | None = None  # the compiled replica of a server fed alone
        # the wait under way: its timer (a stale one rings in vain) and what it ends: an idle wait
        # (to the feed's next arrival, or None), a decode span (B decoders whose contexts summed to
        # S, from t0 s, k steps) or a mixed step (its work, time s, energy J, end s). In two
        # tuples: with 33 attributes (one per value) every attribute read of a server was slower,
        # CPython sharing instance-dict keys only up to about 30 (round_robin's replay lost ~2 %).
        self._timer: simpy.Event | None = None
        self._phase = _IDLE
        self._nxt: float | None = None
        self._span: tuple[int, int, float, int, float, int] = (0, 0, 0.0, 0, 0.0, -1)  # ..., budget (s), held level
        self._step: tuple[Prefill, float, float, float, float, float] = ([], 0.0, 0.0, 0.0, 0.0, 0.0)
        _urgent(env, self._start)

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
        if self.feed_next < len(self.feed_times):
            self._pull(t_s)
        room = self.engine.accepts_arrivals()
        if not self._enqueue(job, t_s) or not self._waiting or self._interrupted:
            return False
        self._interrupted = self.idle or room
        return self._interrupted

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
        if self.feed_next < len(self.feed_times):
            self._pull(now)
        if e.can_span():
            B, S, budget = e.B, e.S, self.costs.budget_for(e.queue_len)
            floor = self.steps.hold(now, B, S, 0, 0, 0)
            if self._exact:
                k = 1
            else:
                k = (
                    e.span_limit()
                    if self.feed_next == len(self.feed_times)
                    else self._span_steps(B, S, now, budget, floor)
                )
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
        e, ledger, exact, steps, closed = self.engine, self.ledger, self._exact, self.steps, self._closed
        ft, fj, n, fi = self.feed_times, self.feed_jobs, len(self.feed_times), self.feed_next
        can_span, enqueue, end_decode, span_steps = e.can_span, e.enqueue, steps.end_decode, self._span_steps
        while True:
            if events <= 0:
                return False
            events -= 1
            now = ledger.t + ledger.tc
            while fi < n and ft[fi] <= now:  # `_pull`, with the server written by `feed`
                if not enqueue(fj[fi]) and self.on_reject is not None:
                    self.on_reject(fj[fi], ft[fi])
                fi += 1
            self.feed_next = fi
            if can_span():
                B, S, budget = e.B, e.S, self.costs.budget_for(e.queue_len)
                floor = steps.hold(now, B, S, 0, 0, 0)
                closed(*end_decode(B, S, 1 if exact else span_steps(B, S, now, budget, floor), budget, floor))
            elif e.busy():
                work = e.form_step(now)
                closed(*steps.end_mixed(work, *steps.mixed_cost(work)))
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
            self._closed(*self.steps.end_decode(B, S, k, budget, floor))
        elif phase == _MIXED:
            work, dt, de, extra, mhz, _ = self._step
            self._closed(*self.steps.end_mixed(work, dt, de, extra, mhz))
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
        self.idle = True
        self._phase = _IDLE
        nxt = self._nxt = self.feed_times[self.feed_next] if self.feed_next < len(self.feed_times) else None
        if nxt is None:
            self._waiting = True
        else:
            self._sleep(nxt)

    def _resume_idle(self, start: float | None) -> None:
        """Leave the idle wait at time `start` (s): move the clock there and take the arrivals."""
        self.idle = False
        assert start is not None
        self.ledger.jump(start)
        self._pull(start)

    def _start_mixed(self, work: Prefill) -> None:
        """One step that prefills `work` (and decodes the running decoders)."""
        if self.on_change is not None:
            self.on_change()  # form_step may have preempted
        dt, de, extra, mhz = self.steps.mixed_cost(work)
        self._phase = _MIXED
        end = self.ledger.now + dt
        self._step = (work, dt, de, extra, mhz, end)
        self._sleep(end)

    def _span_steps(self, B: int, S: int, t0: float, budget: float, floor: int) -> int:
        """Steps of the next plain decode span: to the engine's limit or the next feed arrival
        that could join."""
        e = self.engine
        k = e.span_limit()
        if k > 1 and self.feed_next < len(self.feed_times) and e.accepts_arrivals():
            reach = self.costs.steps_to_reach(B, S, self.feed_times[self.feed_next] - t0, budget, floor)
            if reach < k:
                return reach
        return k


def _urgent(env: simpy.Environment, callback: Callable[[simpy.Event], None]) -> None:
    """Run `callback` at the current time before any other event of that time, after those
    already urgent (as SimPy starts and interrupts processes)."""
    event = simpy.Event(env)
    event._ok, event._value = True, None
    event.callbacks.append(callback)
    env.schedule(event, URGENT)

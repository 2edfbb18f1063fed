"""Waking a server: the callback state machine against the generator process it replaced.

`InterruptedServer` is the server as it was, a SimPy process that sleeps in a generator and is
woken by `Process.interrupt`; the tests run the same fleets with it and with `Server` and ask
for the same records and span logs, bit for bit. The traces put arrivals on a coarse grid and
the steps take dyadic times, so that arrivals, step boundaries and wake-ups often fall on the
same instant: there the order of events decides which arrivals join which step.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import simpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oracle.features import StepCoef
from sim.config import ServerConfig, SloConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import JobTable, Prefill, ServerState
from sim.policies.base import Decision, Policy, Request, Summarizer
from sim.policies.summarization import Summarization
from sim.schedulers import SCHEDULERS
from sim.serving.fleet import Fleet, Pool
from sim.serving.routers import ROUTERS
from sim.serving.run import SimResult, simulate_fleet
from sim.serving.server import Server
from tests.sim.conftest import flat_kv, toy_oracle, trace


class InterruptedServer(Server):
    """The reference: the server's waits as a generator process, woken by `Interrupt` at the
    submit that must wake it (the mechanism `Server` had before its state machine)."""

    def _start(self, _: simpy.Event) -> None:
        self._proc = self.env.process(self._run())

    def offer(self, job: int, t_s: float) -> bool:
        if super().offer(job, t_s):
            self._proc.interrupt(t_s)
        return False  # woken already: nothing for the caller to do

    def _run(self) -> Generator[Any, Any, None]:
        e = self.engine
        if self._alone:
            self._replay()
            yield self.env.timeout(max(self.ledger.now - self.env.now, 0.0))
            return
        while True:
            self._pull(self.ledger.now)
            if e.can_span():
                yield from self._decode()
            elif e.busy():
                yield from self._mixed(e.form_step(self.ledger.now))
            else:
                yield from self._wait_idle()

    def _wait(self, until: float | None) -> Generator[Any, Any, float | None]:
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
        self.idle = True
        nxt = self.feed_times[self.feed_next] if self.feed_next < len(self.feed_times) else None
        woke = yield from self._wait(nxt)
        self.idle = False
        start = woke if woke is not None else nxt
        assert start is not None
        self.ledger.jump(start)
        self._pull(start)

    def _mixed(self, work: Prefill) -> Generator[Any, Any, None]:
        if self.on_change is not None:
            self.on_change()
        dt, de, extra, mhz = self.steps.mixed_cost(work)
        end = self.ledger.now + dt
        while (yield from self._wait(end)) is not None:
            pass
        self._closed(*self.steps.end_mixed(work, dt, de, extra, mhz))

    def _decode(self) -> Generator[Any, Any, None]:
        e, c = self.engine, self.costs
        B, S, budget = e.B, e.S, c.budget_for(e.queue_len)
        t0 = self.ledger.now
        floor = self.steps.hold(t0, B, S, 0, 0, 0)
        k = 1 if self._exact else self._span_steps(B, S, t0, budget, floor)
        while True:
            woke = yield from self._wait(t0 + c.span_s(B, S, k, budget, floor))
            if woke is None:
                break
            k = min(k, c.steps_to_reach(B, S, woke - t0, budget, floor))
        self._closed(*self.steps.end_decode(B, S, k, budget, floor))


class QueueCap(Policy):
    """A dynamic policy: outputs capped at 2 tokens while the chosen replica has a queue."""

    name = "queue_cap"
    dynamic = True

    def decide(self, request: Request, state: ServerState | None = None) -> Decision:
        busy = state is not None and state.queue_len > 0
        return Decision(request.n_in, min(request.n_out, 2) if busy else request.n_out)


def both(requests: pd.DataFrame, fleet: Fleet, policy: Policy | None = None) -> tuple[SimResult, SimResult]:
    """The run with `Server`, and with the reference `InterruptedServer` in its place."""
    new = simulate_fleet(requests, fleet, policy)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sim.serving.wiring.Server", InterruptedServer)
        old = simulate_fleet(requests, fleet, policy)
    return new, old


def assert_same(new: SimResult, old: SimResult) -> None:
    pd.testing.assert_frame_equal(new.requests, old.requests, check_exact=True)
    assert new.makespan_s == old.makespan_s and len(new.servers) == len(old.servers)
    for a, b in zip(new.servers, old.servers, strict=True):
        for name in ("span_start_s", "span_s", "span_energy_j", "span_peak_w", "span_steps", "span_kv_used"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert (a.steps, a.busy_s, a.active_energy_j, a.preemptions) == (
            b.steps,
            b.busy_s,
            b.active_energy_j,
            b.preemptions,
        )


DYADIC = st.sampled_from([0.0, 0.125, 0.25, 0.5, 1.0])


@st.composite
def fleets(draw: st.DrawFn) -> Fleet:
    """1 to 4 toy replicas (dyadic step times), any router and scheduler, caches small enough to preempt."""
    time_coef = (draw(st.sampled_from([0.25, 0.5, 1.0])), draw(DYADIC), draw(st.sampled_from([0.0, 2.0**-10])))
    oracle = toy_oracle(time_coef=(*time_coef, draw(DYADIC), draw(st.sampled_from([0.0, 2.0**-6])), 0.0))
    server = ServerConfig(
        scheduler=draw(st.sampled_from(sorted(SCHEDULERS))),
        block_size=draw(st.sampled_from([1, 4])),
        max_batch_size=draw(st.integers(1, 6)),
        max_num_tokens=draw(st.sampled_from([None, 64])),
        kv_capacity_tokens=draw(st.sampled_from([80, 200, 100_000])),
        exact_steps=draw(st.booleans()),
    )
    router = draw(st.sampled_from(sorted(ROUTERS)))
    replicas = draw(st.integers(1, 4))
    slo = SloConfig(ttft_s=draw(st.sampled_from([2.0, 8.0, 30.0])), tpot_s=draw(st.sampled_from([0.6, 1.5, 4.0])))
    if router != "length_aware":
        return Fleet.single(oracle, server, replicas, router, slo)
    short = Pool("short", oracle, server, replicas, max_input_tokens=16)
    return Fleet((short, Pool("long", oracle, server, 1)), router, slo)


@st.composite
def grid_traces(draw: st.DrawFn) -> pd.DataFrame:
    """Up to 30 requests arriving on a 0.25 s grid (many at the same instant)."""
    n = draw(st.integers(1, 30))
    ticks = sorted(draw(st.lists(st.integers(0, 40), min_size=n, max_size=n)))
    lengths = draw(st.lists(st.tuples(st.integers(1, 40), st.integers(1, 12)), min_size=n, max_size=n))
    return trace([(0.25 * t, i, o) for t, (i, o) in zip(ticks, lengths, strict=True)])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), grid_traces(), st.sampled_from(["none", "dynamic", "separate", "same"]))
def test_wakes_replay_the_interrupted_process_exactly(fleet, requests, policy_kind):
    """Every router, scheduler and policy path (dynamic, summaries on their own server or on the
    fleet), preemptions and exact steps: the same records and spans as the interrupted process."""
    policy: Policy | None = None
    if policy_kind == "dynamic":
        policy = QueueCap()
    elif policy_kind in ("separate", "same"):
        summarizer = fleet.pools[0].oracle if policy_kind == "same" else toy_oracle(name="small")
        policy = Summarization(20, 3, Summarizer(summarizer, policy_kind))
    assert_same(*both(requests, fleet, policy))


def test_same_time_arrivals_all_join_the_step_the_woken_server_forms(toy):
    """Three arrivals at 2.5 s to an idle replica are all prefilled in the one step it forms when
    woken (after the dispatcher's event), not the first alone; then a decode span of all three."""
    fleet = Fleet.single(toy, ServerConfig(max_batch_size=8), 1, "least_tokens")
    rows = [(0.0, 1, 1), (2.5, 1, 2), (2.5, 2, 2), (2.5, 3, 2)]
    new, old = both(trace(rows), fleet, QueueCap())  # a dynamic policy: the dispatcher's path
    assert_same(new, old)
    assert new.requests["start_s"].tolist() == [0.0, 2.5, 2.5, 2.5]
    assert new.requests["first_token_s"].tolist() == [1.0, 3.5, 3.5, 3.5]
    assert new.servers[0].span_start_s.tolist() == [0.0, 2.5, 3.5]


def test_an_arrival_at_a_span_boundary_sees_the_state_before_it(toy):
    """An arrival at the very instant a span ends (a timeout scheduled before the dispatcher's)
    is routed after that boundary, as with the interrupted process."""
    fleet = Fleet.single(toy, ServerConfig(max_batch_size=1), 2, "least_tokens")
    rows = [(0.0, 2, 3), (0.0, 2, 1), (1.0, 2, 2), (3.0, 5, 1), (3.0, 1, 4)]
    assert_same(*both(trace(rows), fleet))


def test_a_submit_from_a_finished_summary_wakes_the_server_after_the_finishing_step(toy):
    """Summaries finish inside a server's event and route their user's request from there: the
    wake-up is an urgent event after it, as an interrupt was."""
    fleet = Fleet.single(toy, ServerConfig(max_batch_size=2), 2, "least_tokens")
    policy = Summarization(4, 2, Summarizer(toy, "same"))
    rows = [(0.0, 8, 3), (0.0, 2, 5), (0.5, 9, 2), (1.0, 2, 2), (2.0, 6, 1)]
    new, old = both(trace(rows), fleet, policy)
    assert_same(new, old)
    assert new.requests["completed"].all()


def test_a_server_woken_mid_span_by_submit_is_cut_at_the_next_boundary():
    """`Server.submit` from another process: the urgent wake-up cuts the decode span at the first
    step boundary after the submit (4 s), where the job is admitted."""
    costs = StepCosts(StepCoef(1.0, 0, 0, 0, 0, 0), StepCoef(1.0, 0, 0, 0, 0, 0), 0.0)
    jobs = JobTable([5, 5], [10, 2])
    env = simpy.Environment()
    server = Server(env, costs, ServerConfig(), jobs, flat_kv(1000))
    server.feed([0.0], [0])

    def later() -> Generator[Any, Any, None]:
        yield env.timeout(3.25)
        server.submit(1)
        assert server.idle is False and jobs.admit_s[1] != jobs.admit_s[1]  # woken after this event

    env.process(later())
    env.run()
    assert jobs.admit_s.tolist() == [0.0, 4.0] and jobs.finish_s.tolist() == [10.0, 6.0]
    assert server.stats().span_start_s.tolist() == [0.0, 1.0, 4.0, 5.0, 6.0]

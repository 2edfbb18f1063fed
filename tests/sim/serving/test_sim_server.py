"""The engine on tiny hand-computed traces: exact event logs, lockstep identity, admission rules."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import features as F
from oracle.features import StepCoef
from sim.config import ServerConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import DONE, REJECTED, JobTable
from sim.results.metrics import idle_energy_j
from sim.schedulers import SCHEDULERS
from sim.serving.run import simulate
from sim.serving.server import Server
from tests.sim.conftest import flat_kv, rejecting, toy_oracle, trace

# A (0 s, 4 in, 3 out); B, C (1.5 s); D (10 s). Every step takes 1 s; max 2 sequences.
TINY = [(0.0, 4, 3), (1.5, 2, 2), (1.5, 1, 1), (10.0, 1, 1)]


def event_log(requests):
    """[(time s, event, request)] sorted by time, from per-request records."""
    log = []
    for i, r in requests.iterrows():
        for event, col in (
            ("arrive", "arrival_s"),
            ("admit", "start_s"),
            ("first", "first_token_s"),
            ("finish", "finish_s"),
        ):
            log.append((float(r[col]), event, "ABCD"[i]))
    order = {"arrive": 0, "admit": 1, "first": 2, "finish": 3}
    return sorted(log, key=lambda e: (e[0], order[e[1]], e[2]))


@pytest.mark.parametrize("exact", [False, True])
def test_exact_event_log_on_a_tiny_trace(toy, exact):
    r = simulate(trace(TINY), toy, ServerConfig(max_batch_size=2, exact_steps=exact))
    # step 1 [0,1]: prefill A.  step 2 [1,2]: decode A (B, C arrive at 1.5, wait for the boundary)
    # step 3 [2,3]: decode A (its last token), prefill B; C waits for a slot
    # step 4 [3,4]: decode B (last), prefill C (n_out=1: done at its prefill).  idle until D.
    assert event_log(r.requests) == [
        (0.0, "arrive", "A"), (0.0, "admit", "A"), (1.0, "first", "A"),
        (1.5, "arrive", "B"), (1.5, "arrive", "C"),
        (2.0, "admit", "B"), (3.0, "admit", "C"), (3.0, "first", "B"), (3.0, "finish", "A"),
        (4.0, "first", "C"), (4.0, "finish", "B"), (4.0, "finish", "C"),
        (10.0, "arrive", "D"), (10.0, "admit", "D"), (11.0, "first", "D"), (11.0, "finish", "D"),
    ]  # fmt: skip
    # energy coef [6, 1, .5, 2, .25, .125]: A = (6+2+1+1.25) + (6+1+2.5) + (3+1+3) = 26.75
    # B = (3+2+.5+.375) + (3+1+1.5) = 11.375;  C = 3+2+.25+.125;  D = 6+2+.25+.125
    assert r.requests["energy_j"].tolist() == [26.75, 11.375, 5.375, 8.375]
    server = r.servers[0]
    assert server.span_start_s.tolist() == [0.0, 1.0, 2.0, 3.0, 10.0]
    assert server.span_energy_j.tolist() == [10.25, 9.5, 12.875, 10.875, 8.375]
    assert idle_energy_j(r) == 10.0 * (11.0 - 5.0)
    assert r.requests["tpot_s"].tolist()[:2] == [1.0, 1.0] and math.isnan(r.requests["tpot_s"][2])


def lockstep_check(oracle, batch, n_in, n_out, exact=False):
    oracle = dataclasses.replace(oracle, power_limit_w=None)  # the polynomial knows no power cap
    rows = [(0.0, n_in, n_out)] * batch
    r = simulate(
        trace(rows), oracle, ServerConfig(max_batch_size=max(batch, 1), exact_steps=exact, max_num_tokens=None)
    )
    energy = float(oracle.energy(n_in, n_out, batch))
    hidden = 0.0 if oracle.overlap is None else float(oracle.overlap.hidden(batch * n_in, "time"))  # one prefill step
    latency = float(F.lockstep_features(n_in, n_out, batch) @ oracle.time_coef_s) - hidden
    np.testing.assert_allclose(r.requests["energy_j"], energy, rtol=1e-12)
    np.testing.assert_allclose(r.requests["e2e_s"], latency, rtol=1e-12)


@pytest.mark.parametrize("exact", [False, True])
def test_lockstep_batch_matches_the_oracle_polynomial(llama, exact):
    lockstep_check(llama, 8, 512, 128, exact)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 16), st.integers(1, 3000), st.integers(1, 400))
def test_lockstep_identity_for_any_shape(llama, batch, n_in, n_out):
    lockstep_check(llama, batch, n_in, n_out)


def test_requests_that_can_never_fit_are_rejected(toy):
    small = toy_oracle(kv_tokens=100)
    rows = [(0.0, 50, 60), (0.0, 10, 10), (0.0, 300, 1)]
    with rejecting("2 of 3 requests were rejected, never served: 2 longer than the KV cache holds"):
        r = simulate(trace(rows), small, ServerConfig(max_num_tokens=256))
    assert r.requests["completed"].tolist() == [False, True, False]
    assert r.requests["energy_j"][0] == 0.0


def test_chunked_prefill_splits_long_prompts(toy):
    r = simulate(trace([(0.0, 600, 2)]), toy, ServerConfig(max_num_tokens=256, chunked_prefill=True))
    # chunks of 256, 256, 88 in steps 1-3: first token at 3 s, last at 4 s
    assert r.requests[["first_token_s", "finish_s"]].iloc[0].tolist() == [3.0, 4.0]
    pairs = F.attn_pairs(256) + F.attn_pairs(256, 256) + F.attn_pairs(88, 512)
    assert pairs == F.attn_pairs(600)
    own = 3 * 2.0 + 0.25 * 600 + 0.125 * pairs + (1.0 + 0.5 * 601)
    assert r.requests["energy_j"][0] == pytest.approx(own + 6.0 * 4)


def test_kv_reservation_makes_requests_wait(toy):
    small = toy_oracle(kv_tokens=30)
    r = simulate(trace([(0.0, 10, 10), (0.0, 10, 10)]), small, ServerConfig(scheduler="trtllm_no_evict", block_size=1))
    # the second reservation (20 tokens) does not fit next to the first: it waits for its finish
    assert r.requests["start_s"].tolist() == [0.0, 10.0]


def test_static_batches_run_until_their_longest_request_ends(toy):
    rows = [(0.0, 4, 2), (0.0, 4, 5), (0.5, 4, 1)]
    r = simulate(trace(rows), toy, ServerConfig(mode="static", max_batch_size=4, max_num_tokens=None))
    assert r.requests["finish_s"].tolist() == [2.0, 5.0, 6.0]
    assert r.requests["start_s"].tolist()[2] == 5.0  # not admitted into the running batch
    cont = simulate(trace(rows), toy, ServerConfig(max_batch_size=4))
    assert cont.requests["start_s"].tolist()[2] == 1.0


def test_submit_wakes_a_server_mid_span():
    """A job submitted mid-span is admitted at the first step boundary after it (dispatcher path)."""
    costs = StepCosts(StepCoef(1.0, 0, 0, 0, 0, 0), StepCoef(1.0, 0, 0, 0, 0, 0), 0.0)
    jobs = JobTable([5, 5], [10, 2])
    env = simpy.Environment()
    server = Server(env, costs, ServerConfig(), jobs, flat_kv(1000))
    server.feed([0.0], [0])

    def later():
        yield env.timeout(3.25)
        server.submit(1)

    env.process(later())
    env.run()
    assert jobs.admit_s.tolist() == [0.0, 4.0]
    assert jobs.finish_s.tolist() == [10.0, 6.0]
    assert (jobs.status == DONE).all() and REJECTED not in jobs.status


def test_several_servers_share_one_environment(toy):
    costs = StepCosts.from_oracle(toy)
    jobs = JobTable([3, 3, 3], [2, 2, 2])
    env = simpy.Environment()
    a = Server(env, costs, ServerConfig(), jobs, flat_kv(1000), index=0)
    b = Server(env, costs, ServerConfig(), jobs, flat_kv(1000), index=1)
    a.feed([0.0, 0.0], [0, 1])
    b.feed([0.5], [2])
    env.run()
    assert jobs.server.tolist() == [0, 0, 1]
    assert jobs.finish_s.tolist() == [2.0, 2.0, 2.5]
    assert a.stats().steps == 2 and b.stats().steps == 2


def test_an_oracle_without_memory_needs_an_explicit_kv_size():
    bare = toy_oracle(kv_tokens=None)
    with pytest.raises(ValueError, match="server.kv_capacity_tokens"):
        simulate(trace([(0.0, 5, 5)]), bare, ServerConfig())
    r = simulate(trace([(0.0, 5, 5)]), bare, ServerConfig(kv_capacity_tokens=100))
    assert r.requests["completed"].all()


@pytest.mark.parametrize("exact", [False, True])
def test_a_step_over_the_power_limit_runs_at_the_highest_clock_that_fits(llama, exact):
    """A long prefill implies more than 700 W on the H100 oracle: as the hardware does, it runs at
    a lower SM clock whose power fits (slower, and with less energy at the lower voltage), and the
    requests' charges still add up to the steps' energy."""
    r = simulate(trace([(0.0, 8000, 4)] * 2), llama, ServerConfig(exact_steps=exact))
    server = r.servers[0]
    first = server.span_energy_j[0] / server.span_s[0]
    unthrottled = dataclasses.replace(llama, power_limit_w=None)
    free = simulate(trace([(0.0, 8000, 4)] * 2), unthrottled, ServerConfig(exact_steps=exact)).servers[0]
    assert free.span_energy_j[0] / free.span_s[0] > llama.power_limit_w  # the model alone says more
    assert 0.97 * llama.power_limit_w < first <= llama.power_limit_w  # one 15 MHz clock step under it
    assert server.peak_power_w <= llama.power_limit_w
    assert server.span_energy_j.sum() < free.span_energy_j.sum() and server.busy_s > free.busy_s
    assert r.requests["energy_j"].sum() == pytest.approx(server.active_energy_j, rel=1e-9)


def _served(alone: bool, scheduler: str, kv_tokens: int) -> tuple[JobTable, object]:
    """A seeded Poisson stream on one llama-like server, fed with or without `alone`."""
    rng = np.random.default_rng(7)
    n = 400
    times = np.cumsum(rng.exponential(0.05, n))
    jobs = JobTable(rng.integers(1, 600, n), rng.integers(1, 300, n))
    costs = StepCosts(
        StepCoef(0.007, 4e-5, 5e-8, 2e-5, 2e-5, 7e-10), StepCoef(3.0, 0.03, 2e-5, 0.01, 0.02, 8e-7), 75.0, 700.0
    )
    env = simpy.Environment()
    server = Server(env, costs, ServerConfig(scheduler=scheduler, block_size=16), jobs, flat_kv(kv_tokens, 16))
    server.feed(times, np.arange(n), alone=alone)
    env.run()
    return jobs, server.stats()


@pytest.mark.parametrize("scheduler", ["vllm", "trtllm_no_evict"])
def test_a_server_fed_alone_replays_the_same_events_without_simpy(scheduler):
    """The plain replay loop gives the event-by-event SimPy process's results bit for bit,
    preemptions included (a small cache)."""
    (a, sa), (b, sb) = _served(True, scheduler, 6000), _served(False, scheduler, 6000)
    for name in ("admit_s", "first_s", "finish_s", "share", "chunks", "status", "server"):
        assert np.array_equal(getattr(a, name), getattr(b, name), equal_nan=True), name
    assert a.preemptions == b.preemptions and a.extra_prefill_tokens == b.extra_prefill_tokens
    assert (a.status == DONE).all() and (SCHEDULERS[scheduler].reserve_full or sum(a.preemptions.values()) > 0)
    assert np.array_equal(sa.span_start_s, sb.span_start_s) and np.array_equal(sa.span_energy_j, sb.span_energy_j)
    assert np.array_equal(sa.span_peak_w, sb.span_peak_w) and sa.steps == sb.steps


def test_a_server_fed_alone_refuses_submits():
    jobs = JobTable([5, 5], [3, 3])
    costs = StepCosts(StepCoef(1.0, 0, 0, 0, 0, 0), StepCoef(1.0, 0, 0, 0, 0, 0), 0.0)
    server = Server(simpy.Environment(), costs, ServerConfig(), jobs, flat_kv(100))
    server.feed([0.0], [0], alone=True)
    with pytest.raises(RuntimeError, match="alone"):
        server.submit(1, 0.0)

"""Routers and their estimates: what each sends where, and the load signals they read."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

import traces
from oracle.features import StepCoef
from sim.config import ServerConfig, SloConfig
from sim.engine.costs import StepCosts, sequence_cost, sequence_energy_j
from sim.engine.jobs import JobTable, ServerState
from sim.policies import PolicyContext, build_policy
from sim.results.metrics import summarize
from sim.serving import estimates, load_index
from sim.serving.estimates import marginal_energy_j, tpot_estimate_s, ttft_estimate_s
from sim.serving.fleet import Fleet, Pool
from sim.serving.routers.cache_aware import CacheAware
from sim.serving.routers.energy_aware import EnergyAware
from sim.serving.routers.least_tokens import LeastTokens
from sim.serving.routers.length_aware import LengthAware
from sim.serving.run import simulate_fleet
from sim.serving.server import Server
from tests.sim.conftest import flat_kv, toy_oracle, trace

COEF = StepCoef(3.0, 0.01, 3e-5, 0.001, 0.01, 4e-7)
SERVER = ServerConfig(kv_capacity_tokens=100_000)


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_scalar_sequence_cost_equals_the_array_one(n_in, n_out):
    scalar = sequence_cost(COEF, n_in, n_out)
    assert isinstance(scalar, float)
    assert np.isclose(scalar, sequence_energy_j(COEF, [n_in], [n_out])[0], rtol=1e-12)


def test_marginal_energy_charges_the_steps_a_request_adds():
    costs = StepCosts(StepCoef(0.01, 0, 0, 0, 0, 0), COEF, idle_power_w=100.0)
    shared = COEF[0] - 100.0 * 0.01  # J per step above idle
    own = sequence_cost(COEF, 50, 40)
    idle = ServerState(0, 0, 1000)
    assert np.isclose(marginal_energy_j(costs, idle, 50, 40), own + 40 * shared)
    busy_longer = ServerState(0, 3, 1000, decoders=3, last_finish_steps=100)
    assert np.isclose(marginal_energy_j(costs, busy_longer, 50, 40), own)
    busy_shorter = ServerState(0, 3, 1000, decoders=3, last_finish_steps=30)
    assert np.isclose(marginal_energy_j(costs, busy_shorter, 50, 40), own + 10 * shared)


def test_latency_estimates_rise_with_load_and_refuse_a_full_server():
    costs = StepCosts(StepCoef(0.01, 0.001, 1e-5, 0.002, 1e-4, 0.0), COEF, 60.0)
    calm = ServerState(0, 2, 10_000, decoders=2, decode_ctx=1000)
    queued = ServerState(3, 2, 10_000, decoders=2, decode_ctx=1000, queued_kv_tokens=600, queued_prompt_tokens=500)
    assert ttft_estimate_s(costs, queued, 100, 10, 256, 8192) > ttft_estimate_s(costs, calm, 100, 10, 256, 8192)
    assert ttft_estimate_s(costs, calm, 100, 10, 2, 8192) == np.inf  # batch full
    assert ttft_estimate_s(costs, calm, 9_000, 1_500, 256, 8192) == np.inf  # KV cache short
    # a hybrid's queued requests and this one each need their state's worth of cache too
    fits = dataclasses.replace(queued, state_kv_tokens=2_000)  # 600 + 110 + 4 × 2,000 ≤ 10,000 free
    assert ttft_estimate_s(costs, fits, 100, 10, 256, 8192) < np.inf
    assert ttft_estimate_s(costs, dataclasses.replace(queued, state_kv_tokens=2_500), 100, 10, 256, 8192) == np.inf
    more = ServerState(0, 9, 10_000, decoders=9, decode_ctx=9000)
    assert tpot_estimate_s(costs, more, 100) > tpot_estimate_s(costs, calm, 100)
    slow = ServerState(0, 2, 10_000, decoders=2, decode_ctx=1000, recent_step_s=0.5)
    assert tpot_estimate_s(costs, slow, 100) == 0.5  # observed steps (prefills included) count


def test_outstanding_tokens_track_queue_prefill_and_decode():
    """Exact steps of 1 s: a request's work goes from n_in + n_out to the outputs it still owes."""
    env = simpy.Environment()
    jobs = JobTable([10, 20], [5, 3])
    costs = StepCosts(StepCoef(1.0, 0, 0, 0, 0, 0), StepCoef(1.0, 0, 0, 0, 0, 0), 0.0)
    server = Server(env, costs, ServerConfig(max_batch_size=1, exact_steps=True), jobs, flat_kv(1000))
    server.feed([0.0, 0.0], [0, 1])
    seen = {}

    def watch():
        for t in (0.5, 1.5, 2.5, 4.5, 5.5, 7.5, 9.0):
            yield env.timeout(t - env.now)
            seen[t] = server.outstanding_tokens()

    env.process(watch())
    env.run()
    # t=0.5: job 0 prefilling, job 1 queued; t=1.5: job 0 owes 4 outputs (steps 2..5), job 1 queued
    assert seen == {0.5: 15 + 23, 1.5: 4 + 23, 2.5: 3 + 23, 4.5: 1 + 23, 5.5: 23, 7.5: 1, 9.0: 0}


def test_a_server_reports_every_load_change_before_it_can_be_read():
    """Exact 1 s steps on a KV cache too small for both requests (one is preempted): whenever the
    state is read, mid-step included, it is the one the server last reported through on_change."""
    env = simpy.Environment()
    jobs = JobTable([8, 8], [10, 10])
    costs = StepCosts(StepCoef(1.0, 0, 0, 0, 0, 0), StepCoef(1.0, 0, 0, 0, 0, 0), 0.0)
    server = Server(env, costs, ServerConfig(max_batch_size=2, exact_steps=True), jobs, flat_kv(20))
    server.feed([0.0, 0.0], [0, 1])
    reported = []
    server.on_change = lambda: reported.append(server.state())
    seen = []

    def watch():
        for k in range(60):
            yield env.timeout(k + 0.5 - env.now)
            seen.append(server.state())
            assert seen[-1] == reported[-1], f"at {env.now} s"

    env.process(watch())
    env.run()
    assert sum(jobs.preemptions.values()) > 0 and seen[-1].outstanding_tokens == 0


def fleet(router, replicas=3, slo=None, oracle=None):
    oracle = oracle or toy_oracle((0.01, 0.0005, 1e-6, 0.001, 2e-5, 0.0), COEF, idle_power_w=60.0, kv_tokens=None)
    return Fleet.single(oracle, SERVER, replicas, router, slo)


LIGHT = trace([(0.05 * i, 100 + 7 * i, 50) for i in range(30)])


def test_least_tokens_sends_work_to_the_idle_replica():
    rows = trace([(0.0, 100, 500), (0.01, 100, 10), (0.02, 100, 10), (0.03, 100, 10)])
    r = simulate_fleet(rows, fleet("least_tokens", 2)).requests
    assert r["server"].tolist()[:2] == [0, 1]  # the long request keeps replica 0 busy
    assert r["server"].tolist()[2:] == [1, 1]


def test_energy_aware_packs_at_light_load_and_saves_energy():
    packed = simulate_fleet(LIGHT, fleet("energy_aware"))
    spread = simulate_fleet(LIGHT, fleet("round_robin"))
    assert packed.requests["server"].nunique() == 1
    assert spread.requests["server"].nunique() == 3
    e_packed, e_spread = (summarize(x, SloConfig())["energy_j"] for x in (packed, spread))
    assert e_packed < 0.9 * e_spread


def test_energy_aware_spreads_when_packing_would_break_the_slo():
    slo = SloConfig(ttft_s=1.0, tpot_s=0.015)  # within 0.8 × 0.015 s a replica takes ~3 decoders
    tight = simulate_fleet(LIGHT, fleet("energy_aware", slo=slo)).requests
    assert tight["server"].nunique() == 3
    assert tight["tpot_s"].max() <= slo.tpot_s


def test_energy_aware_prefers_the_cheaper_gpu():
    cheap = toy_oracle((0.01, 0.0005, 1e-6, 0.001, 2e-5, 0.0), COEF, idle_power_w=60.0, kv_tokens=None)
    dear = toy_oracle((0.01, 0.0005, 1e-6, 0.001, 2e-5, 0.0), tuple(2 * c for c in COEF), 60.0, kv_tokens=None)
    f = Fleet((Pool("dear", dear, SERVER, 2), Pool("cheap", cheap, SERVER, 2)), "energy_aware")
    r = simulate_fleet(LIGHT, f).requests
    assert set(r["server"]) <= {2, 3}


def test_length_aware_bins_by_input_and_output_length():
    rows = trace([(0.0, 50, 10), (0.1, 5000, 10), (0.2, 50, 900), (0.3, 60, 20)])
    o = fleet("round_robin").pools[0].oracle
    pools = (
        Pool("short", o, SERVER, 1, max_input_tokens=1000, max_output_tokens=500),
        Pool("long_in", o, SERVER, 1, max_output_tokens=500),
        Pool("rest", o, SERVER, 1),
    )
    r = simulate_fleet(rows, Fleet(pools, "length_aware")).requests
    assert r["server"].tolist() == [0, 1, 2, 0]


def least_tokens(servers):
    """The server with the least outstanding tokens (the first of equals), by a pass over all of
    them: the definition `LoadIndex.least` keeps without the pass."""
    best, low = servers[0], servers[0].outstanding_tokens()
    for s in servers[1:]:
        w = s.outstanding_tokens()
        if w < low:
            best, low = s, w
    return best


def brute_least_tokens(self, n_in, n_out, job=-1):
    return least_tokens(self.servers)


def brute_length_aware(self, n_in, n_out, job=-1):
    for p, group in zip(self.fleet.pools, self.by_pool, strict=True):
        if p.admits(n_in, n_out):
            return least_tokens(group)
    return least_tokens(self.by_pool[-1])


def brute_energy_aware(self, n_in, n_out, job=-1):
    """Every replica's full snapshot, SLO estimates and marginal energy; the least energy, then work."""
    h = self.fleet.slo_headroom
    ttft_s, tpot_s = h * self.fleet.slo.ttft_s, h * self.fleet.slo.tpot_s
    best, best_e, best_w = None, 0.0, 0
    for group in self.by_pool:
        costs = group[0].costs
        if tpot_estimate_s(costs, estimates.IDLE, n_in) > tpot_s:
            continue
        for s in group:
            st = s.state()
            cfg = s.config
            if tpot_estimate_s(costs, st, n_in) > tpot_s:
                continue
            if ttft_estimate_s(costs, st, n_in, n_out, cfg.max_batch_size, cfg.max_num_tokens) > ttft_s:
                continue
            e = marginal_energy_j(costs, st, n_in, n_out)
            if best is None or e < best_e or (e == best_e and st.outstanding_tokens < best_w):
                best, best_e, best_w = s, e, st.outstanding_tokens
    return best if best is not None else least_tokens(self.servers)


def brute_cache_aware(self, n_in, n_out, job=-1):
    """Every replica's cached share of the prompt less the balance × its relative load; best, then least load."""
    loads = [s.outstanding_tokens() for s in self.servers]
    mean = sum(loads) / len(loads)
    scores = [
        s.engine.cached_tokens(job) / n_in - self.fleet.cache_balance * ((w - mean) / max(1.0, mean))
        for s, w in zip(self.servers, loads, strict=True)
    ]
    k = min(range(len(scores)), key=lambda i: (-scores[i], loads[i], i))
    return self.servers[k]


BRUTE_FORCE = {
    "cache_aware": (CacheAware, brute_cache_aware),
    "least_tokens": (LeastTokens, brute_least_tokens),
    "length_aware": (LengthAware, brute_length_aware),
    "energy_aware": (EnergyAware, brute_energy_aware),
}


def many_replicas(oracle, router, replicas, slo=None, server=None):
    server = server or ServerConfig()
    if router != "length_aware":
        return Fleet.single(oracle, server, replicas, router, slo or SloConfig())
    pools = (
        Pool("short", oracle, server, replicas // 2, max_input_tokens=1024, max_output_tokens=256),
        Pool("long", oracle, server, replicas - replicas // 2),
    )
    return Fleet(pools, "length_aware", slo or SloConfig())


SMALL_KV = ServerConfig(kv_capacity_tokens=12_000)  # preempts: the loads also change when a step forms


@pytest.mark.parametrize(
    ("router", "replicas", "rate_scale", "slo", "server", "summaries"),
    [
        ("least_tokens", 24, 30.0, None, None, False),
        ("least_tokens", 256, 200.0, None, None, False),
        ("least_tokens", 6, 30.0, None, SMALL_KV, False),
        ("least_tokens", 6, 30.0, None, SMALL_KV, True),  # routed from a replica's completion, mid-event
        ("length_aware", 24, 30.0, None, None, False),
        ("length_aware", 6, 30.0, None, SMALL_KV, False),
        ("energy_aware", 6, 12.0, None, None, False),
        ("cache_aware", 6, 30.0, None, SMALL_KV, False),
        ("energy_aware", 24, 60.0, None, None, False),
        ("energy_aware", 256, 400.0, None, None, False),
        ("energy_aware", 24, 60.0, SloConfig(ttft_s=0.3, tpot_s=0.012), None, False),  # the SLO turns some down
        ("energy_aware", 6, 30.0, None, SMALL_KV, True),
    ],
)
def test_router_picks_equal_the_brute_force_definition(
    llama, monkeypatch, router, replicas, rate_scale, slo, server, summaries
):
    """The routers' picks (compiled, or with summaries the Python ones over their index of the
    replicas' loads) must be those of evaluating every replica in full at every arrival, under
    SimPy, on a real trace."""
    size = 3000 if replicas < 100 else 1000  # the brute force reads every replica at every arrival
    requests = traces.load_config(traces.TraceConfig(name="azure_chat", max_requests=size, rate_scale=rate_scale))
    fleet = many_replicas(llama, router, replicas, slo, server)
    policy = None
    if summaries:  # on the replicas themselves
        context = PolicyContext(llama, requests["n_in"].to_numpy(), requests["n_out"].to_numpy())
        params = {"min_input_tokens": 2000, "summary_tokens": 200, "placement": "same", "summarizer_oracle": None}
        policy = build_policy("summarization", params, context)
    fast = simulate_fleet(requests, fleet, policy).requests
    if server is SMALL_KV:
        assert fast["preemptions"].sum() > 0
    cls, brute_force = BRUTE_FORCE[router]
    monkeypatch.setattr(cls, "pick", brute_force)
    monkeypatch.setattr(cls, "kernel_pick", None)  # under SimPy, asking the brute force
    reference = simulate_fleet(requests, fleet, policy).requests
    assert fast["server"].nunique() > min(replicas // 2, 16)
    assert fast["server"].tolist() == reference["server"].tolist()
    assert fast["energy_j"].tolist() == reference["energy_j"].tolist()


def test_cache_aware_picks_equal_the_brute_force_definition_with_prefix_caches(llama, monkeypatch):
    """On Mooncake prompts with shared prefixes (and a small cache that preempts), the compiled
    picks equal a pass over every replica at every arrival under SimPy."""
    requests = traces.load("mooncake_conversation", max_requests=1500)
    fleet = many_replicas(llama, "cache_aware", 6, server=ServerConfig(kv_capacity_tokens=150_000))
    fast = simulate_fleet(requests, fleet).requests
    assert fast["cached_tokens"].sum() > 0 and fast["preemptions"].sum() > 0
    monkeypatch.setattr(CacheAware, "pick", brute_cache_aware)
    monkeypatch.setattr(CacheAware, "kernel_pick", None)  # the SimPy process, asking `pick`
    reference = simulate_fleet(requests, fleet).requests
    assert fast["server"].tolist() == reference["server"].tolist()
    assert fast["energy_j"].tolist() == reference["energy_j"].tolist()


class FakeEngine:
    def __init__(self):
        self.tokens = self.last_finish_steps = 0

    def outstanding_tokens(self):
        return self.tokens


class FakeServer:
    def __init__(self, index):
        self.index, self.name, self.engine, self.on_change = index, f"r{index}", FakeEngine(), None


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 9),
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 6), st.integers(0, 5), st.booleans()), max_size=400),
)
def test_load_index_keeps_the_order_a_full_pass_gives(n, changes):
    """Random load changes, each reported or followed by a query: the index's least-loaded replica and
    its order by (−finish steps, tokens, position) are those of sorting every replica afresh."""
    servers = [FakeServer(i) for i in range(n)]
    index = load_index.LoadIndex(servers, by_finish=True)
    for i, tokens, finish, query in changes:
        s = servers[i % n]
        s.engine.tokens, s.engine.last_finish_steps = tokens, finish
        s.on_change()
        if query:
            least = index.least()
            assert (least.engine.tokens, least.index) == min((x.engine.tokens, x.index) for x in servers)
            assert index.order == sorted((-x.engine.last_finish_steps, x.engine.tokens, x.index) for x in servers)


def test_load_index_heap_stays_bounded_however_it_is_told(llama):
    """Told through `on_change` and read only through `refresh` (energy_aware's walk), or pushed to
    directly (`tracked`, the routed loop) and read through `least`: the heap keeps at most about
    four entries per replica between two reads, however many changes it sees (3,000 requests make
    over 10,000)."""
    for router in ("energy_aware", "least_tokens"):
        made = []
        with pytest.MonkeyPatch.context() as mp:
            real = load_index.LoadIndex.__init__

            def init(self, *args, real=real, made=made, **kwargs):  # type: ignore[no-untyped-def]
                real(self, *args, **kwargs)
                made.append(self)

            mp.setattr(load_index.LoadIndex, "__init__", init)
            requests = traces.load("synthetic", num_requests=3000, rate_per_s=40.0, seed=5)
            simulate_fleet(requests, Fleet.single(llama, ServerConfig(), 3, router))
        assert made and all(len(index._heap) < 1000 for index in made), router

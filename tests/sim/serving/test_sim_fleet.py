"""Fleets: config validation, pool building, and invariants of multi-replica runs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import traces
from sim.config import ServerConfig, SloConfig
from sim.results.metrics import fleet_peak_power_w, idle_energy_j, summarize
from sim.schema import ConfigError
from sim.serving.fleet import Fleet, Pool
from sim.serving.fleet_config import FleetConfig, build_fleet
from sim.serving.routers import ROUTERS
from sim.serving.routers.round_robin import RoundRobin
from sim.serving.run import simulate, simulate_fleet
from tests.sim.conftest import random_rejections, rejecting, toy_oracle, trace

COEF_T = (0.01, 0.001, 1e-5, 0.002, 1e-4, 1e-7)
COEF_E = (3.0, 0.01, 3e-5, 0.001, 0.01, 4e-7)
SERVER = ServerConfig(
    scheduler="trtllm_no_evict", block_size=1, max_batch_size=4, max_num_tokens=256, kv_capacity_tokens=2_000
)


def pools_mapping(**extra):
    return {
        "router": "length_aware",
        "pools": [
            {"name": "short", "replicas": 2, "max_input_tokens": 100, "server": {"max_batch_size": 8}},
            {"name": "long", "oracle": "llama-3.1-8b_h200"},
        ],
        **extra,
    }


def test_fleet_config_reads_pools_and_checks_them():
    cfg = FleetConfig.from_mapping(pools_mapping())
    assert [p.name for p in cfg.pools] == ["short", "long"] and cfg.pools[0].replicas == 2
    cases = [
        ({"pools": [{"name": "a", "gpus": 2}, {"name": "b"}]}, "fleet.pools[0].gpus"),
        ({"replicas": 3}, "fleet.replicas"),
        ({"router": "random"}, "fleet.router"),
        ({"pools": [{"name": "a"}, {"name": "a"}]}, "distinct names"),
        ({"pools": [{"name": "a"}, {"name": "b", "max_output_tokens": 100}]}, "last pool"),
        ({"pools": [{"name": "a", "replicas": 0}, {"name": "b"}]}, "fleet.pools[0].replicas"),
        ({"pools": [{"name": "a", "max_input_tokens": -5}, {"name": "b"}]}, "max_input_tokens"),
        ({"slo_headroom": 1.5}, "fleet.slo_headroom"),
        ({"pools": {"name": "a"}}, "fleet.pools"),
    ]
    for patch, key in cases:
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            FleetConfig.from_mapping(pools_mapping(**patch))
    with pytest.raises(ConfigError, match="length_aware needs"):
        FleetConfig.from_mapping({"router": "length_aware", "replicas": 4})


def test_build_fleet_resolves_oracles_and_server_overrides(llama):
    loaded = []

    def load(name, key):
        loaded.append((name, key))
        return toy_oracle(name=name)

    fleet = build_fleet(FleetConfig.from_mapping(pools_mapping()), llama, SERVER, SloConfig(), load)
    short, long = fleet.pools
    assert short.oracle is llama and long.oracle.name == "llama-3.1-8b_h200"
    assert loaded == [("llama-3.1-8b_h200", "fleet.pools[1].oracle")]
    assert short.server.max_batch_size == 8 and short.server.max_num_tokens == 256  # override + inherited
    assert long.server == SERVER
    assert fleet.replicas == 3 and fleet.router == "length_aware"
    single = build_fleet(FleetConfig(replicas=5), llama, SERVER, SloConfig(), load)
    assert single.replicas == 5 and single.pools[0].name == "main"
    assert single.resized(None, 2).replicas == 2
    with pytest.raises(ConfigError, match="name the one to size"):
        fleet.resized(None, 2)
    with pytest.raises(ConfigError, match="no pool named 'gpu'"):
        fleet.pool("gpu")


def test_a_pool_server_key_error_names_the_pool(llama):
    bad = pools_mapping()
    bad["pools"][0]["server"] = {"max_batch": 8}
    with pytest.raises(ConfigError, match=r"fleet.pools\[0\].server.max_batch"):
        build_fleet(FleetConfig.from_mapping(bad), llama, SERVER, SloConfig(), lambda n, k: llama)


def test_one_replica_fleet_is_the_single_server_run(llama):
    rows = trace([(0.0, 100, 20), (0.1, 300, 5), (0.1, 50, 40), (2.0, 10, 10)])  # 300 > max_num_tokens
    with rejecting("1 of 4 requests were rejected, never served: 1 prompt"):
        single = simulate(rows, llama, SERVER)
    for router in ROUTERS:
        if router == "length_aware":
            continue
        with rejecting("1 of 4 requests were rejected"):
            fleet = simulate_fleet(rows, Fleet.single(llama, SERVER, 1, router)).requests
        np.testing.assert_array_equal(fleet["finish_s"], single.requests["finish_s"])
        np.testing.assert_array_equal(fleet["energy_j"], single.requests["energy_j"])


requests = st.lists(st.tuples(st.floats(0.0, 5.0), st.integers(1, 400), st.integers(1, 60)), min_size=1, max_size=30)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def two_pools(router: str, replicas: int, exact: bool = False) -> Fleet:
    server = ServerConfig(**{**SERVER.__dict__, "exact_steps": exact})
    cheap = toy_oracle(COEF_T, COEF_E, idle_power_w=60.0, kv_tokens=None, name="cheap")
    dear = toy_oracle(COEF_T, tuple(2 * c for c in COEF_E), idle_power_w=80.0, kv_tokens=None, name="dear")
    pools = (
        Pool("a", cheap, server, replicas, max_input_tokens=200),
        Pool("b", dear, ServerConfig(**{**server.__dict__, "max_batch_size": 2}), 2),
    )
    return Fleet(pools, router, SloConfig(ttft_s=0.5, tpot_s=0.05))


@random_rejections
@SETTINGS
@given(requests, st.sampled_from(sorted(ROUTERS)), st.integers(1, 3))
def test_fleet_runs_conserve_energy_and_finish_each_request_once(rows, router, replicas):
    result = simulate_fleet(trace(sorted(rows)), two_pools(router, replicas))
    r = result.requests
    s = summarize(result, SloConfig())
    assert np.isclose(r["energy_j"].sum() + idle_energy_j(result), s["energy_j"], rtol=1e-12)
    done = r["completed"].to_numpy()
    assert np.isfinite(r.loc[done, "finish_s"]).all() and np.isnan(r.loc[~done, "finish_s"]).all()
    too_big = (r["n_in"] + r["n_out"]) > SERVER.kv_capacity_tokens
    too_big |= r["n_in"] > SERVER.max_num_tokens
    assert (~done == too_big).all()
    assert set(r["server"]) <= set(range(replicas + 2))
    if router == "length_aware":  # prompts over 200 tokens never reach pool a
        assert (r.loc[r["n_in"] > 200, "server"] >= replicas).all()
        assert (r.loc[r["n_in"] <= 200, "server"] < replicas).all()


@random_rejections
@SETTINGS
@given(requests, st.integers(1, 3))
def test_fleet_closed_form_spans_match_exact_steps(rows, replicas):
    """Round robin routes without server state, so both modes see the same assignment."""
    fast = simulate_fleet(trace(sorted(rows)), two_pools("round_robin", replicas)).requests
    exact = simulate_fleet(trace(sorted(rows)), two_pools("round_robin", replicas, exact=True)).requests
    np.testing.assert_array_equal(fast["server"], exact["server"])
    for col in ("energy_j", "ttft_s", "tpot_s", "e2e_s"):
        np.testing.assert_allclose(fast[col], exact[col], rtol=1e-9, atol=1e-12)


@random_rejections
@SETTINGS
@given(requests, st.integers(2, 4))
def test_round_robin_feeds_equal_routing_each_arrival(rows, replicas):
    """The up-front assignment (servers read their arrivals) and per-arrival submits agree."""
    fleet = Fleet.single(toy_oracle(COEF_T, COEF_E, kv_tokens=None), SERVER, replicas, "round_robin")
    fed = simulate_fleet(trace(sorted(rows)), fleet).requests
    RoundRobin.static = False
    try:
        routed = simulate_fleet(trace(sorted(rows)), fleet).requests
    finally:
        RoundRobin.static = True
    np.testing.assert_array_equal(fed["server"], np.arange(len(rows)) % replicas)
    np.testing.assert_array_equal(routed["server"], fed["server"])
    for col in ("energy_j", "ttft_s", "e2e_s", "finish_s"):
        np.testing.assert_allclose(routed[col], fed[col], rtol=1e-12, atol=1e-12)


@random_rejections
@SETTINGS
@given(requests, st.sampled_from(sorted(ROUTERS)))
def test_fleet_peak_power_is_the_highest_sum_over_servers(rows, router):
    servers = simulate_fleet(trace(sorted(rows)), two_pools(router, 2)).servers
    probes = np.concatenate([s.span_start_s for s in servers] + [np.zeros(1)])
    best = 0.0
    for t in probes:  # the total is piecewise constant and changes only at span starts
        total = 0.0
        for s in servers:
            inside = (s.span_start_s <= t) & (t < s.span_start_s + s.span_s)
            total += max(s.span_peak_w[inside].max(), s.idle_power_w) if inside.any() else s.idle_power_w
        best = max(best, total)
    assert np.isclose(fleet_peak_power_w(servers), best, rtol=1e-12)
    assert fleet_peak_power_w(servers) >= max(s.peak_power_w for s in servers)


@pytest.mark.parametrize("placement", ["separate", "same"])
@pytest.mark.parametrize("router", ["round_robin", "least_tokens", "energy_aware"])
def test_summaries_and_dynamic_policies_run_on_fleets(llama, placement, router):
    from sim.policies import PolicyContext, build_policy

    rows = trace([(0.1 * i, 3000 if i % 3 == 0 else 300, 40) for i in range(24)])
    context = PolicyContext(llama, rows["n_in"].to_numpy(), rows["n_out"].to_numpy())
    params = {"min_input_tokens": 1000, "summary_tokens": 100, "placement": placement}
    if placement == "same":
        params["summarizer_oracle"] = None
    summarize_long = build_policy("summarization", params, context)
    result = simulate_fleet(rows, Fleet.single(llama, ServerConfig(), 3, router), summarize_long)
    r = result.requests
    assert r["completed"].all() and len(result.servers) == 3 + (placement == "separate")
    long = r["n_in"] == 3000
    assert (r.loc[long, "summary_energy_j"] > 0).all() and (r.loc[long, "n_in_served"] == 100).all()
    assert (r.loc[long, "server"] < 3).all()  # the user's request returns to a replica
    active = sum(s.active_energy_j for s in result.servers)
    assert np.isclose(r["energy_j"].sum(), active, rtol=1e-12)

    tighten = build_policy("adaptive_gen", {"queue_threshold": 0, "queue_factor": 0.5}, context)
    d = simulate_fleet(rows, Fleet.single(llama, ServerConfig(), 3, router), tighten).requests
    assert d["completed"].all() and (d["n_out_served"] <= d["n_out"]).all()


@pytest.fixture(scope="module")
def busy_minute():
    return traces.load_config(traces.TraceConfig(name="azure_chat", max_requests=2000, rate_scale=200.0))


@pytest.mark.parametrize("router", sorted(ROUTERS))
def test_a_fleet_of_256_replicas_runs_with_every_router(llama, busy_minute, router):
    """256 replicas (length_aware: 128 short + 128 long) take ~1,100 requests/s of azure_chat."""
    if router == "length_aware":
        pools = (
            Pool("short", llama, ServerConfig(), 128, max_input_tokens=2048, max_output_tokens=512),
            Pool("long", llama, ServerConfig(), 128),
        )
        fleet = Fleet(pools, router)
    else:
        fleet = Fleet.single(llama, ServerConfig(), 256, router)
    result = simulate_fleet(busy_minute, fleet)
    r = result.requests
    assert len(result.servers) == 256 and r["completed"].all()
    assert r["server"].between(0, 255).all()
    spread = r["server"].nunique()
    assert spread > 128 if router != "energy_aware" else 1 < spread < 128  # energy_aware packs


def test_servers_fed_alone_take_turns_the_one_furthest_behind_first(llama, monkeypatch):
    import sim.serving.run
    from sim.serving.server import Server

    turns: list[tuple[float, float]] = []  # (clock of the server run, lowest clock of the others)
    servers: list[Server] = []
    replay = Server.replay

    def watched(self: Server, events: int = 1 << 62) -> bool:
        if self not in servers:
            servers.append(self)
        others = [s.ledger.now for s in servers if s is not self and s.feed_next < len(s.feed_times)]
        turns.append((self.ledger.now, min(others, default=float("inf"))))
        return replay(self, events)

    monkeypatch.setattr(Server, "replay", watched)
    monkeypatch.setattr(sim.serving.run, "REPLAY_EVENTS", 50)
    fleet = Fleet((Pool("main", llama, ServerConfig(), replicas=3),))
    requests = traces.load("azure_chat", max_requests=3000)
    together = simulate_fleet(requests, fleet)
    assert len(servers) == 3 and len(turns) > 3000 // 50  # at least an event per request, 50 a turn
    assert all(own <= lowest for own, lowest in turns[3:])  # after each server's first turn
    monkeypatch.setattr(sim.serving.run, "REPLAY_EVENTS", 1 << 62)  # each server all at once
    assert together.requests.equals(simulate_fleet(requests, fleet).requests)

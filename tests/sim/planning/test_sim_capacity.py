"""Capacity search: the smallest fleet meeting the SLO, checked against its neighbours."""

from __future__ import annotations

import logging

import pytest

import traces
from sim.config import ServerConfig, SloConfig
from sim.planning.capacity import CapacityConfig, probe, search_capacity
from sim.policies.base import Policy
from sim.schema import ConfigError
from sim.serving.fleet import Fleet, Pool
from sim.serving.run import simulate_fleet


@pytest.fixture(scope="module")
def busy_chat():
    """The first 2,000 azure_chat requests at 20× their rate (~110 requests/s)."""
    return traces.load_config(traces.TraceConfig(name="azure_chat", max_requests=2000, rate_scale=20.0))


@pytest.mark.parametrize("router", ["least_tokens", "round_robin"])
def test_the_answer_meets_the_slo_and_one_fewer_replica_does_not(busy_chat, llama, router):
    fleet = Fleet.single(llama, ServerConfig(), 1, router, SloConfig(ttft_s=1.0, tpot_s=0.1))
    cfg = CapacityConfig(enabled=True)
    capacity, result = search_capacity(busy_chat, fleet, Policy(), cfg)
    n = capacity.replicas
    assert capacity.met and n > 1 and len(result.servers) == n == capacity.gpus
    assert probe(result, n, fleet.slo, cfg).met
    below = simulate_fleet(busy_chat, fleet.resized(None, n - 1))
    assert not probe(below, n - 1, fleet.slo, cfg).met
    tried = {p.replicas: p for p in capacity.probes}
    assert tried[n].met and not tried[n - 1].met  # the search itself probed both neighbours
    doubling = [2**k for k in range(n.bit_length() + 1) if 2 ** (k - 1) < n]  # 1, 2, 4, … up to ≥ n
    assert set(doubling) <= set(tried)
    assert all(p.met == (p.replicas >= n) for p in capacity.probes)


def test_attainment_target_needs_fewer_replicas_than_a_strict_percentile(busy_chat, llama):
    fleet = Fleet.single(llama, ServerConfig(), 1, "least_tokens", SloConfig(ttft_s=0.5, tpot_s=0.05))
    strict, _ = search_capacity(busy_chat, fleet, Policy(), CapacityConfig(percentile=99.9))
    half = CapacityConfig(target="attainment", attainment=0.5)
    loose, result = search_capacity(busy_chat, fleet, Policy(), half)
    assert loose.replicas < strict.replicas
    assert probe(result, loose.replicas, fleet.slo, half).attainment >= 0.5


def test_an_unreachable_slo_reports_the_ceiling_and_warns(busy_chat, llama, caplog):
    fleet = Fleet.single(llama, ServerConfig(), 1, "least_tokens", SloConfig(ttft_s=1e-4, tpot_s=1e-4))
    with caplog.at_level(logging.WARNING, logger="sim.planning.capacity"):
        capacity, result = search_capacity(busy_chat, fleet, Policy(), CapacityConfig(max_replicas=3))
    assert not capacity.met and capacity.replicas == 3 and len(result.servers) == 3
    assert sorted(p.replicas for p in capacity.probes) == [1, 2, 3]
    assert "do not meet" in caplog.text and "capacity.max_replicas" in caplog.text


def test_only_the_named_pool_is_sized(busy_chat, llama):
    pools = (Pool("big", llama, ServerConfig(), 2), Pool("fixed", llama, ServerConfig(), 1))
    fleet = Fleet(pools, "least_tokens")
    capacity, result = search_capacity(busy_chat, fleet, Policy(), CapacityConfig(pool="big", max_replicas=8))
    assert capacity.pool == "big" and capacity.gpus == capacity.replicas + 1
    assert sum(s.pool == "fixed" for s in result.servers) == 1
    with pytest.raises(ConfigError, match="name the one to size"):
        search_capacity(busy_chat, fleet, Policy(), CapacityConfig())


def test_capacity_config_is_checked():
    for kwargs, key in [
        ({"target": "p99"}, "capacity.target"),
        ({"percentile": 0}, "capacity.percentile"),
        ({"attainment": 1.5}, "capacity.attainment"),
        ({"max_replicas": 0}, "capacity.max_replicas"),
    ]:
        with pytest.raises(ConfigError, match=key):
            CapacityConfig(**kwargs)


def test_a_fleet_of_multi_gpu_replicas_counts_its_gpus(busy_chat):
    """Replicas of four GPUs (Llama-3.1-70B, tensor parallel 4): the answer and every probe count
    four GPUs a replica, and the fleet summary says so per pool."""
    from oracle.model import Oracle
    from sim.results.metrics import fleet_summary

    tp4 = Oracle.load("llama-3.1-70b_h100_tp4")
    fleet = Fleet.single(tp4, ServerConfig(), 1, "least_tokens", SloConfig(ttft_s=2.0, tpot_s=0.2))
    capacity, result = search_capacity(busy_chat.iloc[:400], fleet, Policy(), CapacityConfig(enabled=True))
    assert capacity.gpus == 4 * capacity.replicas and all(p.gpus == 4 * p.replicas for p in capacity.probes)
    summary = fleet_summary(result, fleet.resized(None, capacity.replicas))
    assert summary["gpus"] == summary["pools"]["main"]["gpus"] == 4 * capacity.replicas


@pytest.mark.parametrize("offset", [-3, -1, 0, 2, 9])
def test_a_search_started_near_its_answer_finds_the_same_answer_with_fewer_probes(busy_chat, llama, offset):
    fleet = Fleet.single(llama, ServerConfig(), 1, "least_tokens", SloConfig(ttft_s=1.0, tpot_s=0.1))
    cfg = CapacityConfig(enabled=True)
    from_one, _ = search_capacity(busy_chat, fleet, Policy(), cfg)
    n = from_one.replicas
    near, result = search_capacity(busy_chat, fleet, Policy(), cfg, start=max(n + offset, 1))
    assert near.replicas == n and near.met and len(result.servers) == n
    tried = {p.replicas: p.met for p in near.probes}
    assert tried[n] and (n == 1 or not tried[n - 1])  # both neighbours probed, as from 1
    if abs(offset) <= 1:
        assert len(near.probes) <= 3 < len(from_one.probes)

"""The prefix cache (`sim.kernel.prefix`): the compiled loops give the Python loops' results bit for
bit, and the simple reference's within 1e-9, with hits, evictions and preemptions of sequences
whose blocks are shared; an unbounded cache finds every repeated leading block; the cache never
changes what a request generates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, given
from hypothesis import strategies as st

import traces
from sim.config import ServerConfig
from sim.schedulers import SCHEDULERS
from sim.serving.run import simulate
from tests.sim.conftest import random_rejections, toy_oracle, trace
from tests.sim.kernel.test_loop import assert_same, both
from tests.sim.serving.test_sim_properties import COEF_E, COEF_T, SETTINGS

PAGED = sorted(name for name, cls in SCHEDULERS.items() if cls.prefix_caching)


@pytest.fixture(scope="module")
def mooncake() -> pd.DataFrame:
    return traces.load("mooncake_conversation").iloc[:1500]


def leading_repeats(frame: pd.DataFrame, block: int = 512) -> tuple[int, int]:
    """(prompt tokens of leading blocks seen before, prompt tokens): an unbounded cache's hits
    when no two requests overlap, at most (n_in − 1) // block blocks a prompt."""
    seen: set[int] = set()
    hits = 0
    for ids, n in zip(frame["hash_ids"], frame["n_in"], strict=True):
        ids = list(ids)
        k, i = min(len(ids), (n - 1) // block), 0
        while i < k and ids[i] in seen:
            i += 1
        hits += i * block
        seen.update(ids)
    return hits, int(frame["n_in"].sum())


@pytest.mark.parametrize("scheduler", PAGED)
@pytest.mark.parametrize("chunked", [True, False])
def test_the_kernel_replays_a_small_prefix_cache_bit_for_bit(llama, mooncake, scheduler, chunked):
    """Hits, evictions and preemptions (a cache of a few prompts), the same as the reference's."""
    fast = mooncake.assign(arrival_s=mooncake["arrival_s"] * 0.2)
    budget = 8192 if chunked else 1 << 17  # without chunks a prompt (up to 126k tokens here) is one step
    config = ServerConfig(
        scheduler=scheduler, kv_capacity_tokens=150_000, chunked_prefill=chunked, max_num_tokens=budget
    )
    compiled, general = both(fast, llama, config)
    assert_same(compiled, general)
    r = compiled.requests
    assert r["cached_tokens"].sum() > 0 and r["preemptions"].sum() > 0


def test_an_unbounded_cache_finds_every_repeated_leading_block(llama, mooncake):
    """Requests far apart (none overlaps another): the hit rate is the trace's leading-block reuse exactly."""
    apart = mooncake.assign(arrival_s=np.arange(len(mooncake)) * 1000.0)
    r = both(apart, llama, ServerConfig(kv_capacity_tokens=100_000_000))[0].requests
    hits, tokens = leading_repeats(apart)
    assert hits > 0 and int(r["cached_tokens"].sum()) == hits and int(r["n_in_served"].sum()) == tokens


def test_a_smaller_cache_finds_fewer_blocks(llama, mooncake):
    """First prefills only (no preemptions: a re-prefill finds its own blocks again)."""
    apart = mooncake.assign(arrival_s=np.arange(len(mooncake)) * 1000.0)
    found = []
    for cap in (100_000_000, 1_000_000, 300_000):
        r = both(apart, llama, ServerConfig(kv_capacity_tokens=cap))[0].requests
        assert r["preemptions"].sum() == 0 and r["completed"].all()
        found.append(int(r["cached_tokens"].sum()))
    assert found[0] > found[1] > found[2] > 0


def test_the_cache_saves_prefill_and_changes_no_output(llama, mooncake):
    on, off = (
        both(mooncake, llama, ServerConfig(prefix_caching=pc, kv_capacity_tokens=400_000))[0] for pc in (True, False)
    )
    a, b = on.requests, off.requests
    assert a["n_out_served"].tolist() == b["n_out_served"].tolist()
    assert (b["cached_tokens"] == 0).all() and a["cached_tokens"].sum() > 0
    assert a["energy_j"].sum() < b["energy_j"].sum()
    for run in (on, off):  # requests' charges add up to the steps' energy
        assert run.requests["energy_j"].sum() == pytest.approx(sum(s.active_energy_j for s in run.servers), rel=1e-9)


def test_a_trace_without_blocks_runs_as_before(llama):
    azure = traces.load("azure_chat").iloc[:2000]
    on, off = (both(azure, llama, ServerConfig(prefix_caching=pc))[0] for pc in (True, False))
    assert_same(on, off)


blocks = st.lists(st.integers(0, 2), min_size=0, max_size=8)


@random_rejections
@SETTINGS
@given(
    st.lists(st.tuples(st.floats(0, 30), st.integers(1, 300), st.integers(1, 60), blocks), min_size=1, max_size=40),
    st.sampled_from(PAGED),
    st.sampled_from([1_000, 3_000, 100_000]),
    st.booleans(),
    st.sampled_from([64, 8192]),
)
def test_random_runs_with_shared_prefixes_replay_bit_for_bit(rows, scheduler, kv, chunked, budget):
    """Prompts built from a few shared blocks of 32 tokens (`hash_ids` as prefix chains), small
    caches: every hit, eviction and preemption as the reference has them, KV never over capacity."""
    rows = sorted(rows)
    frame = trace([(t, n_in, n_out) for t, n_in, n_out, _ in rows])
    chains = []
    for _, n_in, _, ids in rows:  # a prefix chain: block k's hash names the blocks 0..k before it
        chain = [hash(tuple(ids[: k + 1])) & 0xFFFF for k in range(len(ids))]
        chains.append(chain[: -(-n_in // 32)])
    frame["hash_ids"] = pd.Series(chains, dtype="object")
    oracle = toy_oracle(COEF_T, COEF_E, idle_power_w=60.0, kv_tokens=None)
    config = ServerConfig(
        scheduler=scheduler,
        kv_capacity_tokens=kv,
        chunked_prefill=chunked,
        max_num_tokens=budget,
        max_batch_size=8,
        block_size=16,
    )
    frame.attrs["hash_block_tokens"] = 32
    compiled, general = both(frame, oracle, config)
    assert_same(compiled, general)
    event("hits" if compiled.requests["cached_tokens"].sum() else "no hits")
    exact = simulate(frame, oracle, dataclasses.replace(config, exact_steps=True)).requests  # checks KV every step
    for column in ("completed", "n_out_served", "cached_tokens", "preemptions"):
        assert exact[column].tolist() == compiled.requests[column].tolist(), column
    # each request's charge, summed step by step, is the fast mode's formula less what the cache spared
    np.testing.assert_allclose(exact["energy_j"], compiled.requests["energy_j"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("router", ["least_tokens", "energy_aware", "cache_aware"])
def test_a_routed_fleet_with_prefix_caches_replays_bit_for_bit(llama, mooncake, router):
    """Each replica has its own cache (the SimPy process on the reference engine, or the compiled fleet)."""
    from sim.serving.fleet import Fleet
    from tests.sim.kernel.test_fleet import both as both_routed

    fast = mooncake.assign(arrival_s=mooncake["arrival_s"] * 0.5)
    fleet = Fleet.single(llama, ServerConfig(kv_capacity_tokens=200_000), 3, router)
    compiled, general = both_routed(fast, fleet)
    assert_same(compiled, general)
    assert compiled.requests["cached_tokens"].sum() > 0


def test_the_prefill_the_cache_spares_is_what_the_prefills_no_longer_cost(llama, mooncake):
    """Requests far apart, one chunk each: a request's own prefill energy without the cache less
    with it is what the cache spared it."""
    apart = mooncake.assign(arrival_s=np.arange(len(mooncake)) * 1000.0)
    on, off = (
        both(apart, llama, ServerConfig(prefix_caching=pc, max_num_tokens=1 << 17))[0].requests for pc in (True, False)
    )
    spared = off["prefill_energy_j"] - on["prefill_energy_j"]
    np.testing.assert_allclose(spared, on["cache_saved_j"], rtol=1e-9, atol=1e-9)
    assert on["cache_saved_j"].sum() > 0 and (on["prefill_energy_j"] > 0).all()


def test_a_sliding_window_model_runs_without_the_cache_unless_it_is_asked_for(mooncake):
    """The schedulers ship with the switch null (their default): a model the cache is not
    modelled for warns and runs without it; asking for it is a clear error."""
    from oracle.model import Oracle
    from sim.engine.settings import PrefixCachingOffWarning
    from sim.schema import ConfigError

    gemma = Oracle.load("gemma-2-9b_h100")
    short = mooncake[mooncake["n_in"] < 4000].iloc[:50]
    with pytest.warns(PrefixCachingOffWarning, match="sliding-window layers"):
        r = simulate(short, gemma, ServerConfig()).requests
    assert (r["cached_tokens"] == 0).all()
    with pytest.raises(ConfigError, match="server.prefix_caching=true cannot be served"):
        simulate(short, gemma, ServerConfig(prefix_caching=True))


def test_the_shipped_engine_configs_leave_the_switch_to_the_scheduler():
    from pathlib import Path

    import yaml

    for path in sorted(Path("conf/server/scheduler").glob("*.yaml")):
        assert yaml.safe_load(path.read_text())["prefix_caching"] is None, path.name

"""Batch formation: hand-computed event logs with a preemption, KV layouts, scheduler choices."""

from __future__ import annotations

import pytest

from oracle.model import MemorySpec
from sim.config import ServerConfig
from sim.engine.jobs import DONE, REJECT_KV, REJECT_TOKEN_BUDGET, JobTable
from sim.engine.kv import KvLayout
from sim.engine.kv_sizing import kv_layout
from sim.engine.simple import SimpleEngine
from sim.schedulers import SCHEDULERS
from sim.schema import ConfigError
from sim.serving.run import simulate
from tests.sim.conftest import flat_kv, rejecting, toy_oracle, trace
from tests.sim.serving.test_sim_server import event_log

# A and B (0 s, 3 in, 4 out); every step takes 1 s; blocks of 2 tokens, 4 blocks in all.
PAIR = [(0.0, 3, 4), (0.0, 3, 4)]


def test_a_preemption_by_recomputation_event_by_event(toy):
    server = ServerConfig(scheduler="vllm", block_size=2, kv_capacity_tokens=8, max_batch_size=2)
    for exact in (False, True):
        r = simulate(trace(PAIR), toy, ServerConfig(**{**server.__dict__, "exact_steps": exact}))
        # step 1: prefill A and B (2 blocks each: the cache is full); steps 2: decode both (contexts 4).
        # step 3: both need a block for context 5; B, admitted last, is preempted (its 2 blocks
        # freed, back to the queue) and A decodes.  step 4: A's last token (context 6), B's
        # re-prefill of 3 + 2 tokens needs 3 blocks and only 1 is free.  step 5: B re-prefills 5
        # tokens, emitting its 3rd token; step 6: B's last token.
        assert event_log(r.requests)[:8] == [
            (0.0, "arrive", "A"), (0.0, "arrive", "B"), (0.0, "admit", "A"), (0.0, "admit", "B"),
            (1.0, "first", "A"), (1.0, "first", "B"), (4.0, "finish", "A"), (6.0, "finish", "B"),
        ]  # fmt: skip
        assert r.requests["preemptions"].tolist() == [0, 1]
        assert r.requests["recomputed_tokens"].tolist() == [0, 5]
        # energy coef [6, 1, .5, 2, .25, .125]; the shared 6 J per step split between the batch
        # A: (3 + 2 + .75 + .75) + (3 + 1 + 2) + (6 + 1 + 2.5) + (6 + 1 + 3) = 32
        # B: 6.5 + 6 + re-prefill (6 + 2 + 1.25 + 1.875) + (6 + 1 + 3) = 33.625
        assert r.requests["energy_j"].tolist() == pytest.approx([32.0, 33.625], rel=1e-12)
        assert r.servers[0].preemptions == 1


def test_no_evict_reserves_the_whole_request_instead():
    server = ServerConfig(scheduler="trtllm_no_evict", block_size=2, kv_capacity_tokens=8, max_batch_size=2)
    r = simulate(trace(PAIR), toy_oracle(), server)
    # each reserves 3 + 4 tokens (4 blocks): B waits for A to finish at 4 s, then runs alone
    assert r.requests["start_s"].tolist() == [0.0, 4.0]
    assert r.requests["finish_s"].tolist() == [4.0, 8.0]
    assert r.requests["preemptions"].tolist() == [0, 0]


def test_requests_that_can_never_fit_are_rejected_with_a_reason():
    jobs = JobTable([3, 30, 10], [4, 4, 2])
    engine = SimpleEngine(
        jobs, ServerConfig(block_size=2, max_batch_size=4, max_num_tokens=8, chunked_prefill=False), flat_kv(16, 2)
    )
    assert engine.enqueue(0)
    assert not engine.enqueue(1) and jobs.reason[1] == REJECT_KV
    assert not engine.enqueue(2) and jobs.reason[2] == REJECT_TOKEN_BUDGET
    with rejecting("1 of 2 requests were rejected, never served: 1 longer than the KV cache holds"):
        r = simulate(
            trace([(0.0, 3, 4), (0.0, 30, 4)]), toy_oracle(), ServerConfig(kv_capacity_tokens=16, block_size=2)
        )
    assert r.requests["completed"].tolist() == [True, False]
    assert r.requests["reject_reason"].tolist() == ["", "longer than the KV cache holds"]


def test_a_paged_engine_never_holds_more_than_its_cache():
    jobs = JobTable([5] * 6, [9] * 6)
    engine = SimpleEngine(jobs, ServerConfig(block_size=4, max_batch_size=6), flat_kv(32, 4))
    for j in range(6):
        engine.enqueue(j)
    for _ in range(200):
        if engine.can_span():
            engine.run_span(1)
        elif engine.busy():
            engine.finish_step(engine.form_step(0.0))
        else:
            break
        assert 0 <= engine.used <= engine.kv.capacity_units
    assert (jobs.status == DONE).all() and sum(jobs.preemptions.values()) > 0


def test_sliding_window_layers_hold_at_most_their_window():
    memory = MemorySpec(0.0, 62.0, 62 * 16 * 100, kv_layers=62, window_layers=52, window_tokens=1024)
    kv = kv_layout(memory, block_size=16, memory_fraction=1.0, capacity_tokens=None, name="gemma-like")
    assert (kv.full_units, kv.window_units, kv.window_blocks) == (10, 52, 65)  # ⌈1023/16⌉ + 1 blocks
    assert kv.units(1024) == 62 * 64
    assert kv.units(4096) == 10 * 256 + 52 * 65  # the windowed layers stop growing
    assert kv_layout(None, block_size=16, memory_fraction=1.0, capacity_tokens=160, name="x") == KvLayout(
        16, 1, 0, 0, 10
    )


def test_windowed_decoders_agree_between_fast_and_exact_modes():
    """Long outputs cross the window: the decoders' block weights drop mid-run, preemptions follow."""
    memory = MemorySpec(0.0, 4.0, 4 * 300, kv_layers=4, window_layers=3, window_tokens=24)
    oracle = toy_oracle(time_coef=(0.01, 0.001, 1e-5, 0.002, 1e-4, 1e-7))
    oracle.memory = memory
    rows = [(0.1 * i, 20 + 7 * i, 40 + 13 * i) for i in range(8)]
    runs = [
        simulate(trace(rows), oracle, ServerConfig(block_size=8, kv_memory_fraction=1.0, exact_steps=e)).requests
        for e in (False, True)
    ]
    assert runs[0]["completed"].all() and runs[0]["preemptions"].sum() > 0
    for col in ("energy_j", "e2e_s", "ttft_s"):
        assert runs[0][col].to_numpy() == pytest.approx(runs[1][col].to_numpy(), rel=1e-9)


def test_hybrid_sequences_hold_their_state_alike_in_fast_and_exact_modes():
    """A hybrid's state takes KV-cache room from a sequence's first token: a cache of 240 units and
    100 per sequence's state holds two sequences only while they are short, so they queue and
    preempt, and the compiled kernel and the reference engine serve them alike."""
    memory = MemorySpec(0.0, 4.0, 32 * 240, kv_layers=4, seq_state_bytes=32 * 100)  # a unit: 8 tokens × 4 B
    kv = kv_layout(memory, block_size=8, memory_fraction=1.0, capacity_tokens=None, name="hybrid-like")
    assert (kv.state_units, kv.capacity_units) == (100, 240) and kv.units(1) == 101
    oracle = toy_oracle(time_coef=(0.01, 0.001, 1e-5, 0.002, 1e-4, 1e-7))
    oracle.memory = memory
    rows = [(0.1 * i, 20 + 7 * i, 40 + 13 * i) for i in range(8)]
    runs = [
        simulate(trace(rows), oracle, ServerConfig(block_size=8, kv_memory_fraction=1.0, exact_steps=e))
        for e in (False, True)
    ]
    assert runs[0].requests["completed"].all() and runs[0].requests["preemptions"].sum() > 0
    for col in ("energy_j", "e2e_s", "ttft_s"):
        assert runs[0].requests[col].to_numpy() == pytest.approx(runs[1].requests[col].to_numpy(), rel=1e-9)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"scheduler": "orca"}, "server.scheduler"),
        ({"block_size": 0}, "server.block_size"),
        ({"scheduler": "sglang", "scheduler_options": {"decay_step": 3}}, "server.scheduler_options.decay_step"),
        ({"scheduler": "sglang", "scheduler_options": {"decay_steps": 0}}, "server.scheduler_options.decay_steps"),
        ({"scheduler": "sglang", "scheduler_options": {"decay_steps": "x"}}, "server.scheduler_options.decay_steps"),
        ({"scheduler": "vllm", "scheduler_options": {"decay_steps": 5}}, "server.scheduler_options.decay_steps"),
    ],
)
def test_bad_scheduler_settings_name_the_key(values, key):
    with pytest.raises(ConfigError, match=key) as e:
        ServerConfig(**values)
    if key == "server.scheduler":
        assert all(name in str(e.value) for name in SCHEDULERS)


def test_a_token_budget_below_the_batch_cap_is_rejected():
    with pytest.raises(ConfigError, match="server.max_num_tokens"):
        ServerConfig(max_batch_size=16, max_num_tokens=0)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_scheduler_serves_fleets_policies_and_capacity_searches(llama, scheduler):
    """Routers, a dynamic policy and the capacity search run on each engine, tight KV included."""
    import traces
    from sim.config import SloConfig
    from sim.planning.capacity import CapacityConfig, search_capacity
    from sim.policies import PolicyContext, build_policy
    from sim.results.metrics import idle_energy_j, summarize
    from sim.serving.fleet import Fleet
    from sim.serving.run import simulate_fleet

    requests = traces.load_config(traces.TraceConfig(name="azure_chat", max_requests=600, rate_scale=20.0))
    server = ServerConfig(scheduler=scheduler, kv_capacity_tokens=60_000, max_batch_size=64)
    context = PolicyContext(llama, requests["n_in"].to_numpy(), requests["n_out"].to_numpy())
    policy = build_policy("adaptive_gen", {"queue_threshold": 4, "queue_factor": 0.5}, context)
    for router in ("round_robin", "least_tokens", "energy_aware"):
        fleet = Fleet.single(llama, server, 2, router, SloConfig())
        result = simulate_fleet(requests, fleet, policy)
        r = result.requests
        assert r["completed"].all()
        total = summarize(result, SloConfig())["energy_j"]
        assert r["energy_j"].sum() + idle_energy_j(result) == pytest.approx(total, rel=1e-12)
    capacity, _ = search_capacity(requests, Fleet.single(llama, server), policy, CapacityConfig(enabled=True))
    assert capacity.met and capacity.replicas >= 1


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_without_chunked_prefill_a_preempted_request_must_be_able_to_recompute(scheduler):
    """A paged engine may preempt a request after n_out − 1 tokens; its re-prefill of 51 + 14 tokens
    would not fit a 64-token budget and could never run again (found by hypothesis: the replica
    stalled). Such a request is rejected on arrival, as vLLM requires max_num_batched_tokens ≥
    max_model_len without chunked prefill; the reserving engine never preempts and serves it."""
    server = ServerConfig(
        scheduler=scheduler, block_size=16, max_batch_size=2, max_num_tokens=64, chunked_prefill=False,
        kv_capacity_tokens=150,
    )  # fmt: skip
    reserving = SCHEDULERS[scheduler].reserve_full
    with rejecting(None if reserving else "2 of 3 requests were rejected, never served: 2 prompt"):
        r = simulate(trace([(0.765625, 51, 15), (0.875, 60, 6), (1.0, 40, 10)]), toy_oracle(), server).requests
    if reserving:
        assert r["completed"].all()
    else:
        assert r["completed"].tolist() == [False, False, True]
        assert r["reject_reason"].iloc[0].startswith("prompt (or its recomputation after a preemption)")


def test_unservable_requests_are_warned_about_and_counted(llama):
    from sim.config import SloConfig
    from sim.results.metrics import run_summary
    from sim.serving.run_warnings import RejectedRequestsWarning

    rows = [(0.0, 10**9, 100), (0.5, 300, 200), (1.0, 9000, 100), (1.5, 200, 100)]
    server = ServerConfig(scheduler="trtllm_no_evict", max_num_tokens=8192)
    with pytest.warns(RejectedRequestsWarning, match=r"2 of 4 requests were rejected") as caught:
        result = simulate(trace(rows), llama, server)
    (message,) = [str(w.message) for w in caught if w.category is RejectedRequestsWarning]
    assert "1 longer than the KV cache holds" in message
    assert "1 prompt (or its recomputation after a preemption) over server.max_num_tokens" in message
    summary = run_summary(result, SloConfig())
    assert (summary.rejected, summary.rejected_kv_cache, summary.rejected_token_budget) == (2, 1, 1)
    assert result.requests["completed"].tolist() == [False, True, False, True]

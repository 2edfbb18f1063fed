"""The compiled loop of a server fed alone (`sim.kernel.loop`) gives the results of the Python loop
(`Server._replay`) that drives the same compiled rules one call per event (`KernelEngine`), bit for
bit: span logs, counters and ledgers included. The rules themselves are held to the simple
reference engine in tests/sim/engine/test_simple.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import simpy
from hypothesis import given
from hypothesis import strategies as st

import traces
from oracle.features import StepCoef
from oracle.model import ExpertReads, MemorySpec, Oracle
from sim.config import ServerConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import JobTable
from sim.schedulers import SCHEDULERS
from sim.serving.run import SimResult, simulate
from sim.serving.server import Server
from tests.sim.conftest import flat_kv, random_rejections, rejecting, toy_oracle, trace
from tests.sim.serving.test_sim_properties import COEF_E, COEF_T, SETTINGS, requests, servers

# (layers, windowed layers, window tokens): none, Gemma-like halves, mostly windowed
LAYOUTS = st.sampled_from([None, (4, 2, 40), (6, 5, 9)])


def both(requests: pd.DataFrame, oracle: Oracle, config: ServerConfig, **kw: object) -> tuple[SimResult, SimResult]:
    """The run in the compiled loops, and in the Python loops (`Server._replay`, SimPy)."""
    compiled = simulate(requests, oracle, config, **kw)  # type: ignore[arg-type]
    with pytest.MonkeyPatch.context() as mp:
        general_loop(mp)
        general = simulate(requests, oracle, config, **kw)  # type: ignore[arg-type]
    return compiled, general


def general_loop(mp: pytest.MonkeyPatch) -> None:
    """Servers run in the Python loops: `Server._replay` (servers fed alone) or SimPy (routed),
    each event one call of the compiled rules (`KernelEngine`), not the compiled loops."""
    mp.setattr("sim.serving.server.fits", lambda server: False)
    mp.setattr("sim.serving.wiring.fleet_fits", lambda servers, router: False)


def assert_same(a: SimResult, b: SimResult) -> None:
    """Records, makespan and every server's totals and span log equal, bit for bit."""
    pd.testing.assert_frame_equal(a.requests, b.requests, check_exact=True)
    assert a.makespan_s == b.makespan_s and a.peak_power_w == b.peak_power_w
    for x, y in zip(a.servers, b.servers, strict=True):
        for f in dataclasses.fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if isinstance(u, np.ndarray):
                assert u.dtype == v.dtype and np.array_equal(u, v), f.name
            else:
                assert u == v, f.name


def random_oracle(
    limit_w: float | None, layout: tuple[int, int, int] | None, moe: bool, flat_time: bool = False
) -> Oracle:
    """The toy oracle with a power limit (W), sliding-window layers (layers, windowed, window
    tokens), a mixture of experts' reads and step times that do not grow with the context, as drawn."""
    coef_t = (*COEF_T[:2], 0.0, *COEF_T[3:]) if flat_time else COEF_T
    oracle = toy_oracle(coef_t, COEF_E, idle_power_w=60.0, kv_tokens=None)
    oracle.power_limit_w = limit_w
    if moe:  # reading every expert costs as much again as the step constant; a token touches 1 in 16
        oracle.experts = ExpertReads(COEF_T[0], COEF_E[0], 15 / 16)
    if layout is not None:
        layers, windowed, window = layout
        oracle.memory = MemorySpec(0.0, 1.0, 1.0, kv_layers=layers, window_layers=windowed, window_tokens=window)
    return oracle


@random_rejections
@SETTINGS
@given(requests, servers, st.sampled_from([None, 60.0, 150.0]), LAYOUTS, st.booleans(), st.booleans())
def test_the_kernel_replays_random_runs_bit_for_bit(rows, server, limit_w, layout, flat_time, moe):
    """Preemptions, chunks, static batches, power limits, sliding windows and a mixture of
    experts' reads included (and step times that do not grow with the context)."""
    oracle = random_oracle(limit_w, layout, moe, flat_time)
    config = dataclasses.replace(server, kv_capacity_tokens=server.kv_capacity_tokens or 10_000)
    assert_same(*both(trace(sorted(rows)), oracle, config))


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    return traces.load("synthetic", num_requests=1500, rate_per_s=12.0, seed=1)


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize("chunked", [True, False])
def test_the_kernel_replays_a_small_cache_bit_for_bit(llama, synthetic, scheduler, chunked):
    config = ServerConfig(scheduler=scheduler, kv_capacity_tokens=30_000, chunked_prefill=chunked)
    with rejecting(None if chunked else "of 1,500 requests were rejected, never served: [0-9]+ prompt"):
        compiled, general = both(synthetic, llama, config)
    assert_same(compiled, general)
    assert SCHEDULERS[scheduler].reserve_full or compiled.requests["preemptions"].sum() > 0


@pytest.mark.parametrize(("scheduler", "rejected"), [("vllm", None), ("trtllm_no_evict", "220 of 1,500 requests")])
def test_the_kernel_replays_sliding_windows_bit_for_bit(synthetic, scheduler, rejected):
    """The engine without chunked prefill (trtllm_no_evict) rejects the prompts over its token budget."""
    gemma = Oracle.load("gemma-2-9b_h100")
    assert gemma.memory is not None and gemma.memory.window_layers > 0
    long = synthetic.assign(n_in=synthetic["n_in"] * 4)  # contexts past the 4096-token window
    with rejecting(rejected):
        assert_same(*both(long, gemma, ServerConfig(scheduler=scheduler, kv_capacity_tokens=200_000)))


@pytest.mark.parametrize("cap", [None, 2000.0])
def test_a_mixture_of_experts_replays_bit_for_bit_and_its_charges_add_up(synthetic, cap):
    """Expert reads in the kernel are the reference's, and requests' energy adds up to the
    steps' (the reads are shared like the step constant), with and without a cap that throttles."""
    moe = Oracle.load("qwen3-30b-a3b_h100_ep2")
    assert moe.experts is not None and moe.gpus == 2
    moe = dataclasses.replace(moe, power_limit_w=cap or moe.power_limit_w)
    compiled, general = both(synthetic, moe, ServerConfig())
    assert_same(compiled, general)
    charged = compiled.requests["energy_j"].sum()
    assert charged == pytest.approx(sum(s.span_energy_j.sum() for s in compiled.servers), rel=1e-9)


@pytest.mark.parametrize("rate", [1e6, 12.0])
def test_the_kernel_replays_throttled_spans_bit_for_bit(llama, rate):
    """A power limit low enough that decode spans run at it, fully busy and not."""
    capped = dataclasses.replace(llama, power_limit_w=450.0)
    requests = traces.load("synthetic", num_requests=1500, rate_per_s=rate, seed=2)
    compiled, general = both(requests, capped, ServerConfig())
    assert_same(compiled, general)
    peak, steps = compiled.servers[0].span_peak_w, compiled.servers[0].span_steps
    assert peak.max() <= 450.0 and (peak[steps > 1] > 0.97 * 450.0).any()  # throttled to a clock that fits


def test_the_kernel_replays_azure_chat_and_a_streamed_run_bit_for_bit(llama, tmp_path: Path):
    azure = traces.load("azure_chat").iloc[:5000]
    assert_same(*both(azure, llama, ServerConfig()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sim.serving.run.DRAIN_SPANS", 1024)  # hand the span log over every 1024 spans
        compiled = simulate(azure, llama, ServerConfig(), records_path=tmp_path / "a.parquet")
        general_loop(mp)
        general = simulate(azure, llama, ServerConfig(), records_path=tmp_path / "b.parquet")
    assert_same(compiled, general)
    assert compiled.servers[0].span_bin_s > 0


@pytest.mark.parametrize("scheduler", ["vllm", "trtllm_no_evict"])
def test_the_kernel_leaves_the_engine_and_ledger_as_the_general_loop_does(scheduler):
    """The engine's counters and the ledger end as the general loop leaves them."""
    ends = []
    for compiled in (True, False):
        rng = np.random.default_rng(3)
        n = 300
        jobs = JobTable(rng.integers(1, 600, n), rng.integers(1, 300, n))
        costs = StepCosts(
            StepCoef(0.007, 4e-5, 5e-8, 2e-5, 2e-5, 7e-10), StepCoef(3.0, 0.03, 2e-5, 0.01, 0.02, 8e-7), 75.0, 700.0
        )
        env = simpy.Environment()
        server = Server(env, costs, ServerConfig(scheduler=scheduler), jobs, flat_kv(6000, 16))
        server.feed(np.cumsum(rng.exponential(0.05, n)), np.arange(n), alone=True)
        with pytest.MonkeyPatch.context() as mp:
            if not compiled:
                general_loop(mp)
            env.run()
        e, ledger = server.engine, server.ledger
        ends.append(
            (
                {k: getattr(e, k) for k in ("B", "N", "S", "used", "queued_need", "queued_prompt", "preemptions")},
                (ledger.t, ledger.tc, ledger.steps, ledger.step_avg, ledger.peak_w, server.feed_next, env.now),
                server.state(),
            )
        )
    assert ends[0] == ends[1]
    assert ends[0][0]["queued_need"] == ends[0][2].outstanding_tokens == 0


@random_rejections
@SETTINGS
@given(requests, servers, st.integers(1, 7), st.booleans())
def test_a_replay_paused_every_few_events_gives_the_same_run(rows, server, every, compiled):
    """`Server.replay(events)` stops between two events and goes on from there: the fleet's
    plain loop (`sim.serving.run._replay_alone`) interleaves servers so."""
    oracle = toy_oracle(COEF_T, COEF_E, idle_power_w=60.0, kv_tokens=None)
    config = dataclasses.replace(server, kv_capacity_tokens=server.kv_capacity_tokens or 10_000)
    requests = trace(sorted(rows))
    with pytest.MonkeyPatch.context() as mp:
        if not compiled:
            general_loop(mp)
        whole = simulate(requests, oracle, config)
        mp.setattr("sim.serving.run.REPLAY_EVENTS", every)
        assert_same(simulate(requests, oracle, config), whole)

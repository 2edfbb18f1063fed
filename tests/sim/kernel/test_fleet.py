"""The routed fleet's compiled loop (`sim.kernel.fleet`) gives the SimPy run's results bit for bit, that run
driving the same compiled rules one call per event (`KernelEngine`): SimPy's event order is what is
held here; the rules are held to the simple reference in tests/sim/engine/test_simple.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import traces
from oracle.model import MemorySpec, Oracle
from sim.config import ServerConfig, SloConfig
from sim.schedulers import SCHEDULERS
from sim.serving import routed
from sim.serving.fleet import Fleet, Pool
from sim.serving.routers import ROUTERS
from sim.serving.run import SimResult, simulate_fleet
from tests.sim.conftest import random_rejections, rejecting, toy_oracle, trace
from tests.sim.kernel.test_loop import LAYOUTS, assert_same, general_loop
from tests.sim.serving.test_sim_properties import COEF_E, COEF_T, SETTINGS, servers

COMPILED = sorted(name for name, cls in ROUTERS.items() if cls.kernel_pick is not None)  # every compiled pick

DYADIC_T = (0.25, 0.0, 0.0, 0.125, 0.0, 0.0)  # step times (s) that fall on the arrivals' grid


def both(requests: pd.DataFrame, fleet: Fleet, **kw: object) -> tuple[SimResult, SimResult]:
    """The run in `RoutedFleet`, and the same run under SimPy; the first checked to be the kernel's."""
    runs = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sim.serving.routed.RoutedFleet.run", counted(routed.RoutedFleet.run, runs))
        compiled = simulate_fleet(requests, fleet, **kw)  # type: ignore[arg-type]
        assert runs, "the fleet did not run in RoutedFleet"
        general_loop(mp)
        simpy_run = simulate_fleet(requests, fleet, **kw)  # type: ignore[arg-type]
    return compiled, simpy_run


def counted(run, calls: list):  # type: ignore[no-untyped-def]
    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return run(self, *args, **kwargs)

    return wrapper


def fleet_of(oracle: Oracle, server: ServerConfig, router: str, replicas: int, slo: SloConfig) -> Fleet:
    if router != "length_aware":
        return Fleet.single(oracle, server, replicas, router, slo)
    short = Pool("short", oracle, server, replicas, max_input_tokens=100)
    return Fleet((short, Pool("long", oracle, server, 1)), router, slo)


# arrivals on a coarse grid (many at one instant) or anywhere
ARRIVALS = st.one_of(st.integers(0, 20).map(lambda k: 0.25 * k), st.floats(0.0, 5.0))
REQUESTS = st.lists(st.tuples(ARRIVALS, st.integers(1, 400), st.integers(1, 60)), min_size=1, max_size=30)


@random_rejections
@SETTINGS
@given(
    REQUESTS,
    servers,
    st.sampled_from(COMPILED),
    st.integers(2, 4),
    st.sampled_from([None, 60.0, 150.0]),
    LAYOUTS,
    st.sampled_from([(2.0, 0.6), (30.0, 4.0)]),
    st.booleans(),
)
def test_the_compiled_fleet_replays_random_fleets_bit_for_bit(
    rows, server, router, replicas, limit_w, layout, slo, dyadic
):
    """Every router, scheduler and batching mode; preemptions, chunks, power limits, sliding
    windows and same-instant arrivals. With dyadic step times, step ends fall on arrival instants,
    where SimPy's event order decides which arrivals join which step."""
    oracle = toy_oracle(DYADIC_T if dyadic else COEF_T, COEF_E, idle_power_w=60.0, kv_tokens=None)
    oracle.power_limit_w = None if dyadic else limit_w
    if layout is not None:
        layers, windowed, window = layout
        oracle.memory = MemorySpec(0.0, 1.0, 1.0, kv_layers=layers, window_layers=windowed, window_tokens=window)
    config = dataclasses.replace(server, kv_capacity_tokens=server.kv_capacity_tokens or 10_000)
    fleet = fleet_of(oracle, config, router, replicas, SloConfig(ttft_s=slo[0], tpot_s=slo[1]))
    if dyadic:
        rows = [(round(4 * t) / 4, n_in, n_out) for t, n_in, n_out in rows]
    assert_same(*both(trace(sorted(rows)), fleet))


@pytest.fixture(scope="module")
def busy() -> pd.DataFrame:
    return traces.load("synthetic", num_requests=3000, rate_per_s=60.0, seed=4)


@pytest.mark.parametrize("router", COMPILED)
@pytest.mark.parametrize("scheduler", ["vllm", "trtllm_no_evict"])
def test_the_compiled_fleet_replays_a_small_cache_and_a_power_limit_bit_for_bit(llama, busy, router, scheduler):
    """Preemptions on a small cache, and decode spans at a power limit low enough to throttle."""
    capped = dataclasses.replace(llama, power_limit_w=450.0)
    config = ServerConfig(scheduler=scheduler, kv_capacity_tokens=20_000)
    unchunked = "of 3,000 requests were rejected, never served: [0-9]+ prompt"  # prompts over the token budget
    with rejecting(None if SCHEDULERS[scheduler].chunked_prefill else unchunked):
        compiled, simpy_run = both(busy, fleet_of(capped, config, router, 4, SloConfig()))
    assert_same(compiled, simpy_run)
    assert SCHEDULERS[scheduler].reserve_full or compiled.requests["preemptions"].sum() > 0
    # throttled to the highest clock that fits 450 W: never above it, some decode spans just under it
    assert max(float(s.span_peak_w.max()) for s in compiled.servers) <= 450.0
    assert any((s.span_peak_w[s.span_steps > 1] > 0.97 * 450.0).any() for s in compiled.servers)


def test_the_compiled_fleet_replays_sliding_windows_bit_for_bit(busy):
    gemma = Oracle.load("gemma-2-9b_h100")
    assert gemma.memory is not None and gemma.memory.window_layers > 0
    long = busy.assign(n_in=busy["n_in"] * 4)  # contexts past the 4096-token window
    fleet = Fleet.single(gemma, ServerConfig(kv_capacity_tokens=200_000), 3, "least_tokens")
    assert_same(*both(long, fleet))


@pytest.mark.parametrize("router", COMPILED)
def test_the_compiled_fleet_replays_a_hybrid_bit_for_bit(busy, router):
    """A hybrid Mamba-Transformer's state takes cache from every sequence: the kernel's admission
    and its routers' KV checks count it as the SimPy servers and routers do."""
    nemotron = Oracle.load("nemotron-nano-9b-v2_h100")
    config = ServerConfig(kv_capacity_tokens=150_000)
    fleet = fleet_of(nemotron, config, router, 3, SloConfig(ttft_s=2.0, tpot_s=0.1))
    assert_same(*both(busy, fleet))


def test_the_compiled_fleet_replays_a_streamed_run_bit_for_bit(llama, tmp_path: Path):
    """Records and span logs handed over every few spans: the same file, bins and fleet peak."""
    azure = traces.load("azure_chat").iloc[:6000]
    fleet = Fleet.single(llama, ServerConfig(), 8, "least_tokens")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("sim.serving.run.DRAIN_SPANS", 2048)  # each of 8 ledgers hands over every 1024 spans
        compiled, simpy_run = both(azure, fleet, records_path=tmp_path / "a.parquet")
    assert_same(compiled, simpy_run)
    assert all(s.span_bin_s > 0 for s in compiled.servers) and compiled.peak_power_w is not None


def test_fits_only_the_plain_server_in_the_fast_mode(llama):
    """Exact steps, recorded features or a listener keep a fleet under SimPy."""
    requests = trace([(0.0, 10, 5), (0.1, 20, 5)])
    for config in (ServerConfig(exact_steps=True), ServerConfig(record_features=True)):
        runs: list = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("sim.serving.routed.RoutedFleet.run", counted(routed.RoutedFleet.run, runs))
            result = simulate_fleet(requests, Fleet.single(llama, config, 2, "least_tokens"))
        assert not runs and result.requests["completed"].all()


def test_an_empty_trace_runs(llama):
    result = simulate_fleet(
        trace([]).astype({"n_in": int, "n_out": int}), Fleet.single(llama, ServerConfig(), 2, "least_tokens")
    )
    assert len(result.requests) == 0 and np.isfinite(result.makespan_s)


def test_an_arrival_at_a_step_end_joins_the_next_step_as_under_simpy():
    """A step that ends at an arrival's instant ends after it (SimPy scheduled the arrival first):
    the arrival joins the step the replica forms then, instead of cutting a decode span after one
    step. Replica 0 prefills job 2 alongside job 0 from 0.625 s to 1.0 s, when job 3 arrives."""
    oracle = toy_oracle(DYADIC_T, COEF_E, idle_power_w=60.0, kv_tokens=None)
    fleet = Fleet.single(oracle, ServerConfig(kv_capacity_tokens=10_000), 2, "least_tokens")
    requests = trace([(0.0, 1, 40), (0.0, 1, 100), (0.5, 1, 2), (1.0, 1, 40)])
    compiled, simpy_run = both(requests, fleet)
    assert_same(compiled, simpy_run)
    assert compiled.requests["server"].tolist() == [0, 1, 0, 0]
    assert compiled.requests["start_s"].tolist() == [0.0, 0.0, 0.625, 1.0]
    assert compiled.servers[0].span_running.tolist()[:4] == [1, 1, 2, 3]  # at 1.0 s: jobs 0 and 2, and 3's prefill

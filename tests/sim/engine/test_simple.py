"""The compiled kernel against the deliberately simple reference engine (`sim.engine.simple`, the
exact-steps mode): random runs over every registered scheduler, with preemptions, chunked and
unchunked prefill, static batches, sliding windows, a mixture of experts' reads and power caps, and
round-robin fleets, agree per request within 1e-9 relative. The kernel runs decode spans in closed
form; the reference runs one step at a time and charges every sequence explicitly."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import traces
from oracle.model import Oracle
from sim.config import ServerConfig
from sim.schedulers import SCHEDULERS
from sim.serving.fleet import Fleet
from sim.serving.run import SimResult, simulate, simulate_fleet
from tests.sim.conftest import random_rejections, rejecting, toy_oracle, trace
from tests.sim.kernel.test_loop import LAYOUTS, random_oracle
from tests.sim.serving.test_sim_properties import COEF_E, COEF_T, SETTINGS, requests, servers

SAME = ("completed", "preemptions", "n_out_served", "server", "reject_reason")  # equal, request by request
CLOSE = ("energy_j", "prefill_energy_j", "start_s", "ttft_s", "tpot_s", "e2e_s", "finish_s")  # within 1e-9


def agree(fast: SimResult, exact: SimResult) -> None:
    """The same requests served, each within 1e-9 relative; the servers' totals too."""
    a, b = fast.requests, exact.requests
    for col in SAME:
        assert a[col].tolist() == b[col].tolist(), col
    for col in CLOSE:
        np.testing.assert_allclose(a[col], b[col], rtol=1e-9, atol=1e-12, err_msg=col)
    assert fast.makespan_s == pytest.approx(exact.makespan_s, rel=1e-9, abs=1e-12)
    for x, y in zip(fast.servers, exact.servers, strict=True):
        assert x.preemptions == y.preemptions
        assert x.span_energy_j.sum() == pytest.approx(y.span_energy_j.sum(), rel=1e-9, abs=1e-12)
        assert x.span_steps.sum() == y.span_steps.sum()


def both(run, config: ServerConfig) -> tuple[SimResult, SimResult]:  # type: ignore[no-untyped-def]
    """`run(config)` on the kernel, and on the simple reference."""
    return run(config), run(dataclasses.replace(config, exact_steps=True))


@random_rejections
@SETTINGS
@given(requests, servers, st.sampled_from([None, 60.0, 150.0]), LAYOUTS, st.booleans())
def test_the_kernel_runs_random_servers_as_the_simple_reference(rows, server, limit_w, layout, moe):
    oracle = random_oracle(limit_w, layout, moe)
    config = dataclasses.replace(server, kv_capacity_tokens=server.kv_capacity_tokens or 10_000)
    agree(*both(lambda c: simulate(trace(sorted(rows)), oracle, c), config))


@random_rejections
@SETTINGS
@given(requests, servers, st.integers(1, 4))
def test_the_kernel_runs_random_round_robin_fleets_as_the_simple_reference(rows, server, replicas):
    """Round robin routes without reading the servers, so both engines serve the same requests
    (routers that read a server see it at its last event: per span here, per step there)."""
    oracle = toy_oracle(COEF_T, COEF_E, idle_power_w=60.0, kv_tokens=None)
    config = dataclasses.replace(server, kv_capacity_tokens=server.kv_capacity_tokens or 10_000)
    run = lambda c: simulate_fleet(trace(sorted(rows)), Fleet.single(oracle, c, replicas, "round_robin"))  # noqa: E731
    agree(*both(run, config))


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
@pytest.mark.parametrize("chunked", [True, False])
def test_every_registered_scheduler_runs_a_small_cache_as_the_simple_reference(scheduler, chunked):
    """1,200 synthetic requests through a cache that preempts (unless the scheduler reserves)."""
    requests = traces.load("synthetic", num_requests=1200, rate_per_s=12.0, seed=1)
    llama = toy_oracle(COEF_T, COEF_E, idle_power_w=60.0, kv_tokens=None)
    config = ServerConfig(scheduler=scheduler, kv_capacity_tokens=30_000, chunked_prefill=chunked)
    with rejecting(None if chunked else "requests were rejected, never served: [0-9]+ prompt"):
        fast, exact = both(lambda c: simulate(requests, llama, c), config)
    agree(fast, exact)
    assert SCHEDULERS[scheduler].reserve_full or fast.requests["preemptions"].sum() > 0


def test_the_simple_reference_reads_nothing_of_the_kernel():
    """It is a separate implementation: neither of its modules imports `sim.kernel`."""
    for name in ("simple.py", "simple_state.py"):
        tree = ast.parse((Path(__file__).parents[3] / "sim" / "engine" / name).read_text())
        imported = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        assert not [m for m in imported if m.startswith("sim.kernel")], name


@pytest.mark.slow  # about 10 s: CI runs it, the quick set does not
@pytest.mark.parametrize("scheduler", sorted(n for n, cls in SCHEDULERS.items() if cls.prefix_caching))
def test_a_real_trace_with_a_small_prefix_cache_runs_as_the_simple_reference(scheduler):
    """1,200 Mooncake conversation turns on a cache that both hits and preempts."""
    requests = traces.load("mooncake_conversation").iloc[2000:3200].copy()
    requests["arrival_s"] -= requests["arrival_s"].min()
    llama = Oracle.load("llama-3.1-8b_h100")
    config = ServerConfig(scheduler=scheduler, block_size=32, kv_capacity_tokens=30_000, max_batch_size=64)
    with rejecting("of 1,200 requests were rejected, never served: .*longer than the KV cache holds"):
        fast, exact = both(lambda c: simulate(requests, llama, c), config)
    agree(fast, exact)
    assert fast.requests["cached_tokens"].tolist() == exact.requests["cached_tokens"].tolist()
    assert fast.requests["cached_tokens"].sum() > 0 and fast.requests["preemptions"].sum() > 0

"""One trace split into time windows, merged: each request once, energy and latency as one process."""

from __future__ import annotations

import logging
import math
import os
import pickle
import secrets
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from oracle.build import oracle_for
from oracle.model import Oracle, OracleRangeWarning
from sim.config import ServerConfig, SloConfig
from sim.policies import PolicyContext, build_policy
from sim.results.metrics import summarize
from sim.schema import ConfigError
from sim.serving.fleet import Fleet
from sim.serving.run import simulate_fleet
from sim.serving.windows import ExecutionConfig, clip, plan_windows, simulate_windows

SLO = SloConfig()
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def oracle():
    """Llama-3.1-8B on one H100 with the H100 family's constants: the loads below were chosen for
    its speed, and what these tests check is the windowing, not the calibration (refining the
    measured configuration, `oracle.refine`, must not move them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OracleRangeWarning)
        yield oracle_for("llama-3.1-8b", "h100", family=True)


def busy_trace(n: int = 4000, rate_per_s: float = 12.0, seed: int = 0) -> pd.DataFrame:
    """Poisson arrivals at a rate that keeps one H100 batching (log-normal lengths), seeded."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    n_in = np.clip(rng.lognormal(6.5, 1.0, n), 16, 8000).astype(np.int64)
    n_out = np.clip(rng.lognormal(5.0, 0.8, n), 2, 2000).astype(np.int64)
    return pd.DataFrame({"arrival_s": arrival, "n_in": n_in, "n_out": n_out})


def relative(a: float, b: float) -> float:
    return abs(a / b - 1.0)


def test_windows_split_by_request_count_and_own_every_arrival_once():
    arrival = np.array([0.0, 1.0, 1.0, 1.0, 2.0, 5.0, 6.0, 9.0])
    plan = plan_windows(arrival, 3, warmup_s=1.5)
    owned = np.concatenate([np.arange(w.owned, w.stop) for w in plan])
    assert owned.tolist() == list(range(arrival.size))
    assert plan[0].start_s == -math.inf and plan[-1].end_s == math.inf
    for w in plan:
        assert np.all((arrival[w.owned : w.stop] >= w.start_s) & (arrival[w.owned : w.stop] < w.end_s))
        assert w.first == np.searchsorted(arrival, w.start_s - 1.5)  # warm-up: the 1.5 s before
    assert len(plan_windows(np.zeros(5), 4, 1.0)) == 1  # one instant cannot be split


def test_clipping_a_span_log_at_a_boundary_keeps_energy_and_busy_time(oracle):
    result = simulate_fleet(busy_trace(600), Fleet.single(oracle, ServerConfig()))
    s = result.servers[0]
    cut = float(s.span_start_s[len(s.span_s) // 2] + 0.4 * s.span_s[len(s.span_s) // 2])  # inside a span
    left, right = clip(s, -math.inf, cut), clip(s, cut, math.inf)
    assert left.span_start_s[-1] + left.span_s[-1] == pytest.approx(cut) == right.span_start_s[0]
    assert left.active_energy_j + right.active_energy_j == pytest.approx(s.active_energy_j, rel=1e-12)
    assert left.busy_s + right.busy_s == pytest.approx(s.busy_s, rel=1e-12)
    assert abs(left.steps + right.steps - s.steps) <= 1 and left.steps and right.steps
    assert max(left.peak_power_w, right.peak_power_w) == s.peak_power_w


def test_one_window_is_the_single_process_run(oracle):
    requests, fleet = busy_trace(400), Fleet.single(oracle, ServerConfig())
    one = simulate_fleet(requests, fleet)
    merged = simulate_windows(requests, fleet, windows=1, warmup_s=60.0)
    pd.testing.assert_frame_equal(merged.requests, one.requests)
    assert merged.servers[0].active_energy_j == one.servers[0].active_energy_j


@pytest.mark.parametrize("replicas", [1, 2])
def test_merged_windows_count_each_request_once_and_match_one_process(oracle, replicas):
    """4 windows of ~83 s, each after a 60 s warm-up (longer than any request's stay) and before a 60 s
    cool-down. Replicas behind least_tokens pick differently after a window's restart, so single
    latencies differ; their percentiles and the energy must not."""
    requests = busy_trace()
    fleet = Fleet.single(oracle, ServerConfig(), replicas=replicas, router="least_tokens")
    one = simulate_fleet(requests, fleet)
    merged = simulate_windows(requests, fleet, windows=4, warmup_s=60.0)
    assert one.requests["e2e_s"].max() < 60.0
    r = merged.requests
    assert r["request_id"].tolist() == list(range(len(requests)))
    assert np.array_equal(r["arrival_s"].to_numpy(), requests["arrival_s"].to_numpy())
    assert list(r.columns) == list(one.requests.columns) and int(r["completed"].sum()) == len(requests)
    a, b = summarize(merged, SLO), summarize(one, SLO)
    assert relative(a["energy_j"], b["energy_j"]) < 0.005
    assert relative(a["active_energy_j"], b["active_energy_j"]) < 0.005
    assert relative(r["energy_j"].sum(), one.requests["energy_j"].sum()) < 0.005  # each from its owner
    assert a["makespan_s"] == pytest.approx(b["makespan_s"], rel=1e-3)
    # Two replicas route a restarted window differently: their p99s, the tails of 40 requests, differ
    # by up to 4.6 % over busy_trace's seeds 0-5, their medians by under 1 %.
    tolerance = {"p50": 0.02, "p99": 0.02} if replicas == 1 else {"p50": 0.03, "p99": 0.06}
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        for p in ("p50", "p99"):
            assert relative(a[key][p], b[key][p]) < tolerance[p], (key, p)
    spans = merged.servers[0].span_start_s
    assert np.all(np.diff(spans) >= -1e-9)  # windows' spans abut in time order


def test_a_too_short_warm_up_misses_work_and_is_reported(oracle, caplog):
    """Windows started nearly cold lose the work of requests running at their start, and the
    boundary check (the cool-down's requests served by both windows) says so."""
    requests, fleet = busy_trace(rate_per_s=16.0), Fleet.single(oracle, ServerConfig())
    base = summarize(simulate_fleet(requests, fleet), SLO)["active_energy_j"]
    with caplog.at_level(logging.WARNING, logger="sim.serving.windows"):
        cold = simulate_windows(requests, fleet, windows=8, warmup_s=1.0, cooldown_s=60.0)
    assert "warmup_s=1 s is too short" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sim.serving.windows"):
        warm = simulate_windows(requests, fleet, windows=8, warmup_s=120.0)
    assert not caplog.records
    cold_j, warm_j = (summarize(r, SLO)["active_energy_j"] for r in (cold, warm))
    assert relative(warm_j, base) < 0.005 < relative(cold_j, base)


def test_a_summarizing_policy_on_its_own_gpu_merges_both_servers(oracle):
    requests = busy_trace(1500)
    context = PolicyContext(oracle, requests["n_in"].to_numpy(), requests["n_out"].to_numpy())
    policy = build_policy("summarization", {"min_input_tokens": 1024}, context)
    fleet = Fleet.single(oracle, ServerConfig())
    one = simulate_fleet(requests, fleet, policy)
    merged = simulate_windows(requests, fleet, policy, windows=3, warmup_s=60.0)
    assert [s.name for s in merged.servers] == [s.name for s in one.servers] == ["main", "summarizer"]
    assert merged.policy == "summarization"
    assert merged.requests["summary_tokens"].equals(one.requests["summary_tokens"])
    for m, o in zip(merged.servers, one.servers, strict=True):
        assert relative(m.active_energy_j, o.active_energy_j) < 0.005


def test_bad_arguments_name_what_is_wrong(oracle):
    requests, fleet = busy_trace(50), Fleet.single(oracle, ServerConfig())
    for kwargs, key in [
        ({"windows": 0, "warmup_s": 1.0}, "windows"),
        ({"windows": 2, "warmup_s": -1.0}, "warmup_s"),
        ({"windows": 2, "warmup_s": 1.0, "executor": "dask"}, "executor"),
    ]:
        with pytest.raises(ConfigError, match=key):
            simulate_windows(requests, fleet, **kwargs)


def test_ray_executor_without_ray_says_how_to_install_it(oracle, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'sweetspot-sim\[ray\]'"):
        simulate_windows(busy_trace(50), Fleet.single(oracle, ServerConfig()), windows=2, warmup_s=1.0, executor="ray")


def test_execution_config_checks_its_keys_and_runs_what_it_names(oracle, monkeypatch):
    requests, fleet = busy_trace(600), Fleet.single(oracle, ServerConfig())
    bad = {"mode": "dask", "windows": 0, "warmup_s": -1.0, "cooldown_s": math.inf}
    for key, value in bad.items():
        with pytest.raises(ConfigError, match=f"execution.{key}"):
            ExecutionConfig(**{key: value})
    single = ExecutionConfig().simulate(requests, fleet)
    pd.testing.assert_frame_equal(single.requests, simulate_fleet(requests, fleet).requests)
    windowed = ExecutionConfig("local", windows=3, warmup_s=20.0, cooldown_s=10.0).simulate(requests, fleet)
    expected = simulate_windows(requests, fleet, windows=3, warmup_s=20.0, cooldown_s=10.0)
    pd.testing.assert_frame_equal(windowed.requests, expected.requests)
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"execution.mode='ray' needs Ray: pip install 'sweetspot-sim\[ray\]'"):
        ExecutionConfig("ray")


def ray_case() -> tuple[pd.DataFrame, Fleet, dict]:
    """The run both executors do: 2 replicas behind least_tokens, 3 windows."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OracleRangeWarning)
        fleet = Fleet.single(Oracle.load("llama-3.1-8b_h100"), ServerConfig(), replicas=2, router="least_tokens")
    return busy_trace(1200), fleet, {"windows": 3, "warmup_s": 30.0}


RAY_RUN = """
import pickle, sys
from sim.serving.windows import simulate_windows
from tests.sim.serving.test_windows import ray_case
requests, fleet, kwargs = ray_case()
result = simulate_windows(requests, fleet, executor="ray", **kwargs)
import ray  # imported by simulate_windows, after it set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
nodes = [n["NodeManagerAddress"] for n in ray.nodes()]
pickle.dump((result, nodes, ray.util.get_node_ip_address()), open(sys.argv[1], "wb"))
"""


@pytest.mark.slow
def test_ray_and_local_executors_give_identical_results(tmp_path):
    """A fresh process: `simulate_windows` starts its own Ray (on 127.0.0.1) and runs the windows
    as Ray tasks; this process runs them locally."""
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = tmp_path / "ray.pkl"
    done = subprocess.run([sys.executable, "-c", RAY_RUN, str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    with out.open("rb") as f:
        on_ray, nodes, driver_ip = pickle.load(f)
    requests, fleet, kwargs = ray_case()
    local = simulate_windows(requests, fleet, executor="local", **kwargs)
    assert nodes == ["127.0.0.1"] and driver_ip == "127.0.0.1"
    pd.testing.assert_frame_equal(on_ray.requests, local.requests)
    assert on_ray.makespan_s == local.makespan_s
    for a, b in zip(on_ray.servers, local.servers, strict=True):
        assert a.active_energy_j == b.active_energy_j and np.array_equal(a.span_start_s, b.span_start_s)

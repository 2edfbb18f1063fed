"""Closed-loop clients (`sim.serving.clients`): one request each in the system, sends at the finish (plus
think time), the exact request count, the seed, and `python -m sim trace=closed_loop` end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import traces
from sim.app import execute, prepare
from sim.config import ServerConfig
from sim.policies import PolicyContext, build_policy
from sim.run_config import app_config
from sim.schema import ConfigError
from sim.serving.fleet import Fleet
from sim.serving.run import simulate, simulate_fleet
from sim.serving.run_warnings import RejectedRequestsWarning
from sim.serving.windows import simulate_windows
from tests import subprocess_env
from tests.sim.conftest import toy_oracle

ROOT = Path(__file__).resolve().parents[3]


def closed(clients: int, n: int = 60, **options) -> pd.DataFrame:
    return traces.load("closed_loop", concurrency=clients, num_requests=n, **{"n_in": 300, "n_out": 40, **options})


def in_system(records: pd.DataFrame) -> int:
    """The most requests arrived and not yet finished at any instant (a finish at t leaves before
    an arrival at t joins; a rejected request leaves as it arrives)."""
    arrive = records["arrival_s"].to_numpy()
    finish = records["finish_s"].fillna(records["arrival_s"]).to_numpy()
    times = np.concatenate([finish, arrive])
    steps = np.concatenate([-np.ones(finish.size), np.ones(arrive.size)])
    order = np.lexsort((steps, times))  # at one time, the finishes (-1) first
    return int(np.cumsum(steps[order]).max())


def test_one_client_without_think_time_sends_each_request_as_the_last_finishes(llama):
    r = simulate(closed(1, n=20), llama, ServerConfig()).requests
    assert r["completed"].all() and r["arrival_s"].iat[0] == 0.0
    assert (r["arrival_s"].to_numpy()[1:] == r["finish_s"].to_numpy()[:-1]).all()  # exact
    assert np.ptp(r["ttft_s"]) < 1e-9  # every request alone on the server: the same latency


def test_one_client_with_think_time_waits_it_after_each_finish(llama):
    r = simulate(closed(1, n=10, think_s=0.5), llama, ServerConfig()).requests
    assert (r["arrival_s"].to_numpy()[1:] == r["finish_s"].to_numpy()[:-1] + 0.5).all()


@pytest.mark.parametrize("clients", [2, 5, 16])
@pytest.mark.parametrize("think", [{}, {"think_s": 0.3, "think": "exponential", "n_in": None}])
def test_c_clients_never_have_more_than_c_requests_in_the_system(llama, clients, think):
    fleet = Fleet.single(llama, ServerConfig(), replicas=2, router="least_tokens")
    r = simulate_fleet(closed(clients, **think), fleet).requests
    assert len(r) == 60 and r["completed"].all()  # the exact count, all served
    assert in_system(r) == clients  # reached, never passed
    assert r["arrival_s"].is_monotonic_increasing and (r["ttft_s"] > 0).all()


def test_a_closed_loop_is_deterministic_under_its_seed(llama):
    def run(seed):
        return simulate(closed(4, think_s=0.2, think="exponential", seed=seed), llama, ServerConfig()).requests

    a, b, c = run(3), run(3), run(4)
    pd.testing.assert_frame_equal(a, b)
    assert not a["arrival_s"].equals(c["arrival_s"])


def test_rejected_requests_move_their_clients_on():
    toy = toy_oracle(kv_tokens=1000)
    requests = pd.DataFrame({"arrival_s": 0.0, "n_in": [10, 5000, 5000, 10, 5000, 10], "n_out": 5})
    with pytest.warns(RejectedRequestsWarning, match="3 of 6 requests were rejected"):
        r = simulate(requests, toy, ServerConfig(), clients=2).requests
    assert r["completed"].tolist() == [True, False, False, True, False, True]
    assert not r["arrival_s"].isna().any() and in_system(r) <= 2


def test_bad_clients_and_think_times_are_one_clear_error(llama):
    with pytest.raises(ValueError, match="clients must be an integer >= 1, got 0"):
        simulate(closed(1, n=3), llama, ServerConfig(), clients=0)
    bad = closed(2, n=3).assign(think_s=[0.0, -1.0, 0.0])
    with pytest.raises(ValueError, match=r"request 1: think_s -1.0 must be a number >= 0"):
        simulate(bad, llama, ServerConfig())


def test_a_closed_loop_is_not_split_into_windows(llama):
    with pytest.raises(ConfigError, match="requests are a closed loop"):
        simulate_windows(closed(2), Fleet.single(llama, ServerConfig()), windows=2, warmup_s=1.0)


def _sim(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env()
    return subprocess.run([sys.executable, "-m", "sim", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.mark.slow
def test_python_m_sim_runs_a_closed_loop_end_to_end(tmp_path):
    tiny = ("trace=closed_loop", "trace.concurrency=4", "trace.num_requests=24", "trace.n_out=32", "progress=false",
            "plots=false", "background=false", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}")  # fmt: skip
    done = _sim(tmp_path, *tiny, "policy=adaptive_gen", "policy.factor=0.01", "policy.min_output_tokens=8")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "closed loop of 4 clients: the baseline's clients send on its own completions" in done.stdout
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("results in ")]
    out = Path(line.removeprefix("results in "))
    policy, base = (pd.read_parquet(out / f) for f in ("requests.parquet", "requests_baseline.parquet"))
    assert len(policy) == len(base) == 24 and in_system(policy) == in_system(base) == 4
    assert policy["n_out_served"].max() < 32 and not policy["arrival_s"].equals(base["arrival_s"])
    bad = _sim(tmp_path, *tiny, "trace.concurrency=0")
    assert bad.returncode == 1 and "concurrency=0 is invalid, expected an integer >= 1" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_summarized_requests_finish_before_their_client_sends_again(llama):
    requests = closed(3, n=30, n_in=None, seed=2)
    n_in, n_out = requests["n_in"].to_numpy(), requests["n_out"].to_numpy()
    policy = build_policy("summarization", {"min_input_tokens": 512}, PolicyContext(llama, n_in, n_out))
    r = simulate(requests, llama, ServerConfig(), policy).requests
    assert (r["summary_tokens"] > 0).sum() >= 3 and r["completed"].all()
    assert in_system(r) == 3  # a user request stays in the system through its summary


def test_the_app_refuses_to_split_a_closed_loop_into_windows(tmp_path):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("sim", overrides=[f"output_dir={tmp_path}", "trace=closed_loop", "execution.mode=local"])
    with pytest.raises(ConfigError, match="execution.mode must be 'single' for trace=closed_loop"):
        app_config(OmegaConf.to_container(cfg, resolve=True))


def test_a_run_against_itself_has_no_note_on_arrivals(tmp_path):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        overrides = ["trace=closed_loop", "trace.num_requests=8", "policy=none", "plots=false", "progress=false"]
        cfg = compose("sim", overrides=[f"output_dir={tmp_path}", *overrides, "tracking.enabled=false"])
    summary = execute(prepare(app_config(OmegaConf.to_container(cfg, resolve=True))))
    assert summary.baseline_source == "same run" and summary.arrivals_note == "" and summary.run.completed == 8

"""Threshold search with Hydra's Optuna sweeper: the app's objective drives it, seeded and reproducible."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import subprocess_env

pytestmark = pytest.mark.slow  # two seeded studies of 6 trials, in subprocesses; needs the tune extra

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("experiment", "param"), [("tune_adaptive_gen", "policy.factor"),
                                                   ("tune_truncation", "policy.max_input_tokens")])  # fmt: skip
def test_a_seeded_study_finds_the_same_pareto_front_twice(tmp_path, experiment, param):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    fronts = []
    for trial in range(2):
        cwd = tmp_path / str(trial)
        cwd.mkdir()
        done = subprocess.run(
            [sys.executable, "-m", "sim", f"+experiment={experiment}", "hydra.sweeper.n_trials=6", "trace=synthetic",
             "trace.num_requests=150", "trace.rate_scale=4", "tracking.enabled=false"],
            cwd=cwd, capture_output=True, text=True, timeout=300, env=subprocess_env(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        (results,) = cwd.glob(f"multirun/{experiment}/*/optimization_results.yaml")
        fronts.append(yaml.safe_load(results.read_text())["solutions"])
    assert fronts[0] == fronts[1] and len(fronts[0]) >= 1
    for solution in fronts[0]:
        saved, cost = solution["values"]
        assert set(solution["params"]) == {param} and cost >= 0

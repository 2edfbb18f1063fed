"""The MLflow store under parallel writers, a store broken by an older version, run names."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tracking import TrackingConfig, TrackingError, ensure_experiment, log_run
from tracking.store import check_store
from tracking.sweep import run_name, swept_keys


def _log(uri: str, k: int) -> str | None:
    return log_run(TrackingConfig(uri=uri, experiment="race", run_name=f"r{k}"), {"k": k}, {"v": float(k)})


@pytest.mark.slow
def test_parallel_writers_to_a_new_sqlite_store_all_land(tmp_path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        ids = pool.starmap(_log, [(uri, k) for k in range(6)])
    assert all(ids) and len(set(ids)) == 6
    import mlflow

    mlflow.set_tracking_uri(uri)
    assert sorted(mlflow.search_runs(experiment_names=["race"])["tags.mlflow.runName"]) == [f"r{k}" for k in range(6)]


@pytest.mark.slow
def test_a_store_left_half_migrated_gets_a_one_line_diagnosis_and_the_fix_works(tmp_path):
    path = tmp_path / "mlflow.db"
    config = TrackingConfig(uri=f"sqlite:///{path}", experiment="e")
    ensure_experiment(config)
    with sqlite3.connect(path) as db:  # what a migration interrupted by a parallel one leaves behind
        db.execute("CREATE TABLE _alembic_tmp_experiments (x INTEGER)")
    with pytest.raises(TrackingError) as info:
        check_store(config)
    message = str(info.value)
    assert "\n" not in message and "_alembic_tmp_experiments" in message and "mlflow db upgrade" in message
    assert log_run(config, {}, {"v": 1.0}) is None  # a warning, not a crash
    fix = message.split("fix: ")[1].split(" (or")[0]
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    subprocess.run(fix, shell=True, check=True, capture_output=True, env=env)
    assert log_run(config, {}, {"v": 1.0}) is not None


def test_bad_timeouts_name_the_key():
    with pytest.raises(TrackingError, match="tracking.timeout_s must be > 0"):
        TrackingConfig(timeout_s=0)


def test_run_names_carry_the_overrides_that_vary_in_the_sweep():
    overrides = ["+experiment=tune", "policy=adaptive_gen", "policy.factor=0.5", "trace.rate_scale=2", "seed=3"]
    swept = swept_keys(["policy=adaptive_gen", "policy.factor=0.3,0.5", "seed=3"], ["trace.rate_scale"])
    assert swept == ("policy.factor", "trace.rate_scale")
    assert run_name("adaptive_gen", overrides, swept) == "adaptive_gen factor=0.5 rate_scale=2"
    assert run_name("none", ["output_dir=/x", "seed=3"]) == "none seed=3"  # a single run: all its settings

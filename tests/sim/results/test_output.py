"""A run's folder: summary.json is the same, byte for byte, for the same seed; run.json keeps the
wall-clock figures, and MLflow still gets them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sim.results.summary import WALL_CLOCK
from tests import subprocess_env

ROOT = Path(__file__).resolve().parents[3]
TIMING = {*WALL_CLOCK, *(f"baseline.{k}" for k in WALL_CLOCK)}


def _sim(tmp_path: Path, out: str, uri: str) -> None:
    args = ["trace=synthetic", "trace.num_requests=60", "policy=truncation", "progress=false", "plots=false",
            "background=false", f"tracking.uri={uri}", f"output_dir={tmp_path / out}"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "sim", *args], cwd=tmp_path, capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_two_runs_of_one_seed_write_identical_summaries_and_keep_the_wall_clock_in_run_json(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _sim(tmp_path, "a", uri)
    _sim(tmp_path, "b", uri)
    a, b = ((tmp_path / out / "summary.json").read_bytes() for out in ("a", "b"))
    assert a == b
    summary = json.loads(a)
    assert not set(WALL_CLOCK) & (set(summary) | set(summary["baseline"]))
    timing = {out: json.loads((tmp_path / out / "run.json").read_text())["timing"] for out in ("a", "b")}
    assert set(timing["a"]) == set(timing["b"]) == TIMING
    assert all(v > 0 for t in timing.values() for v in t.values())

    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["sweetspot-sim"])
    assert len(runs) == 2
    logged = sorted(runs["metrics.sim_wall_s"])
    assert logged == pytest.approx(sorted(t["sim_wall_s"] for t in timing.values()))
    assert runs["metrics.baseline.sim_requests_per_s"].gt(0).all()
    assert runs["metrics.energy_j"].nunique() == 1 and runs["metrics.energy_j"].iat[0] == summary["energy_j"]

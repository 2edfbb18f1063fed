"""What a logged run shows in MLflow: the experiment's kind, the source tags, the run's own start
and end, only the params that apply, timelines as step metrics and its files stored once."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.tracking.test_report import summary
from tracking.folder import PARAMS_FILE, SUMMARY_FILE, RunRecord, log_folder
from tracking.log import applicable_params
from tracking.source import SOURCE_NAME, SOURCE_TYPE
from tracking.store import KIND, KIND_TAG, TrackingConfig, ensure_experiment

START_MS, END_MS = 1_700_000_000_000, 1_700_000_004_250
BINS = 2500  # more than tracking.series.MAX_POINTS: thinned to every 3rd bin
PARAMS = {
    "trace": {"name": "azure_chat", "rate_scale": 2.0, "rate_per_s": 1.0, "model": None},
    "fleet": {"pools": [], "replicas": 2},
    "server": {"scheduler_options": None, "max_batch_size": 256},
}


def test_applicable_params_leave_out_nulls_empties_and_unused_keys() -> None:
    assert applicable_params(PARAMS, ["trace.rate_per_s"]) == {
        "trace.name": "azure_chat", "trace.rate_scale": "2.0", "fleet.replicas": "2", "server.max_batch_size": "256",
    }  # fmt: skip
    assert applicable_params({"a": {"b": 0, "c": False, "d": ""}}) == {"a.b": "0", "a.c": "False", "a.d": ""}


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A run folder (params, summary, timelines of the run and its baseline, run.json) logged to a
    fresh SQLite store; (the folder, the MLflow run)."""
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("log")
    folder = root / "run"
    folder.mkdir()
    (folder / PARAMS_FILE).write_text(yaml.safe_dump(PARAMS))
    (folder / SUMMARY_FILE).write_text(json.dumps(summary(900.0, 10.0, 800, 150, 0, 50)))
    t = (np.arange(BINS) + 0.5) * 0.01
    lines = [pd.DataFrame({"t_s": t, "power_w": 100.0 + k + t, "running": t * 0, "run": k}) for k in (0, 1)]
    pd.concat(lines).to_parquet(folder / "timelines.parquet", index=False)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    record = RunRecord(
        TrackingConfig(uri=uri, experiment="view"), run_name="r", tags={SOURCE_NAME: "python -m sim",
        SOURCE_TYPE: "LOCAL"}, artifacts=(SUMMARY_FILE, PARAMS_FILE, "timelines.parquet"), start_ms=START_MS,
        end_ms=END_MS, unused_params=("trace.rate_per_s",), series="timelines.parquet",
    )  # fmt: skip
    record.write(folder)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow's default artifact root is ./mlruns
        run_id = log_folder(folder, raise_errors=True)
    assert run_id is not None
    return folder, MlflowClient(uri).get_run(run_id)


def test_the_experiment_opens_on_its_runs(logged, tmp_path, monkeypatch) -> None:
    from mlflow import MlflowClient

    folder, run = logged
    client = MlflowClient(f"sqlite:///{folder.parent / 'mlflow.db'}")
    assert client.get_experiment(run.info.experiment_id).tags[KIND_TAG] == KIND
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mine, theirs = (MlflowClient(uri).create_experiment(name) for name in ("old", "genai"))  # no kind: made elsewhere
    MlflowClient(uri).set_experiment_tag(theirs, KIND_TAG, "genai_development")
    for name in ("old", "genai"):
        ensure_experiment(TrackingConfig(uri=uri, experiment=name))
    assert MlflowClient(uri).get_experiment(mine).tags[KIND_TAG] == KIND
    assert MlflowClient(uri).get_experiment(theirs).tags[KIND_TAG] == "genai_development"  # a kind set is kept


def test_the_run_has_its_source_its_own_times_and_only_the_params_that_apply(logged) -> None:
    _, run = logged
    assert (run.info.start_time, run.info.end_time, run.info.status) == (START_MS, END_MS, "FINISHED")
    assert run.data.tags[SOURCE_NAME] == "python -m sim" and run.data.tags[SOURCE_TYPE] == "LOCAL"
    assert run.data.params == {"trace.name": "azure_chat", "trace.rate_scale": "2.0", "fleet.replicas": "2",
                               "server.max_batch_size": "256"}  # fmt: skip


def test_timelines_are_step_metrics_at_most_1000_points_a_series(logged) -> None:
    from mlflow import MlflowClient

    folder, run = logged
    client = MlflowClient(f"sqlite:///{folder.parent / 'mlflow.db'}")
    power = sorted(client.get_metric_history(run.info.run_id, "timeline.power_w"), key=lambda m: m.step)
    assert len(power) == 834 and [m.step for m in power[:3]] == [0, 3, 6]
    assert [m.timestamp for m in power[:2]] == [START_MS + 5, START_MS + 35]  # start + t_s of bins 0 and 3
    assert power[1].value == pytest.approx(100.035)
    base = client.get_metric_history(run.info.run_id, "baseline.timeline.power_w")
    assert len(base) == 834 and min(m.value for m in base) == pytest.approx(101.005)
    assert len(client.get_metric_history(run.info.run_id, "timeline.running")) == 834
    assert run.data.metrics["energy_j"] == 900.0  # the summary's metrics are there too


def test_artifacts_are_the_run_folders_files_stored_once(logged) -> None:
    from mlflow.utils.file_utils import local_file_uri_to_path

    folder, run = logged
    stored = Path(local_file_uri_to_path(run.info.artifact_uri))
    assert sorted(p.name for p in stored.iterdir()) == sorted([SUMMARY_FILE, PARAMS_FILE, "timelines.parquet"])
    for name in (SUMMARY_FILE, "timelines.parquet"):
        assert os.path.samefile(stored / name, folder / name)  # one file on disk, two names

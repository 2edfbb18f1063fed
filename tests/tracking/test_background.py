"""The tracking helper process: it logs a run folder, reports failures as this process's warning,
is replaced by logging here when it dies, and never touches the store before `open`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from tracking.background import OPEN, BackgroundTracking, serve
from tracking.folder import PARAMS_FILE, SUMMARY_FILE, RunRecord
from tracking.store import TrackingConfig


def run_folder(tmp_path: Path, uri: str, name: str = "out", **tracking: float) -> tuple[Path, TrackingConfig]:
    """A finished run's folder (config, summary, one artifact, run.json) to be logged to `uri`."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / PARAMS_FILE).write_text(yaml.safe_dump({"policy": {"name": "truncation"}, "seed": 3}))
    (folder / SUMMARY_FILE).write_text(json.dumps({"energy_j": 12.5, "ttft_s": {"p99": 0.25}}))
    (folder / "note.txt").write_text("artifact")
    config = TrackingConfig(uri=uri, experiment="bg", **tracking)  # type: ignore[arg-type]
    RunRecord(config, run_name="truncation seed=3", artifacts=(SUMMARY_FILE, "note.txt")).write(folder)
    return folder, config


def logged(uri: str) -> list[dict]:
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("bg")
    if experiment is None:
        return []
    return [r.to_dictionary() for r in client.search_runs([experiment.experiment_id])]


def test_the_helper_logs_a_folder_to_a_new_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder, config = run_folder(tmp_path, uri)
    helper = BackgroundTracking.start(config)
    assert helper is not None
    helper.open()
    run_id = helper.log(folder)
    (run,) = logged(uri)
    assert run["info"]["run_id"] == run_id and run["info"]["status"] == "FINISHED"
    assert run["data"]["params"]["policy.name"] == "truncation" and run["data"]["metrics"]["ttft_s.p99"] == 0.25
    assert run["data"]["tags"]["mlflow.runName"] == "truncation seed=3"
    import mlflow

    artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(run_id)}
    assert artifacts == {SUMMARY_FILE, "note.txt"}
    assert helper._process.wait(timeout=30) == 0


def test_a_helper_that_died_leaves_the_folder_to_this_process(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder, config = run_folder(tmp_path, uri)
    helper = BackgroundTracking.start(config)
    assert helper is not None
    helper.open()
    helper._process.kill()
    helper._process.wait()
    with caplog.at_level(logging.INFO, logger="tracking"):
        run_id = helper.log(folder)
    assert run_id and [r["info"]["run_id"] for r in logged(uri)] == [run_id]
    assert any("tracking in this process" in r.getMessage() for r in caplog.records)


def test_a_failure_in_the_helper_is_one_warning_here_with_how_to_log_later(tmp_path, caplog):
    folder, config = run_folder(tmp_path, "http://127.0.0.1:9", timeout_s=1.0)
    helper = BackgroundTracking.start(config)
    assert helper is not None
    helper.open()
    with caplog.at_level(logging.WARNING):
        assert helper.log(folder) is None
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    message = warning.getMessage()
    assert "MLflow tracking to 'http://127.0.0.1:9' failed" in message
    assert f"python -m tracking {folder}" in message


def test_a_helper_closed_before_open_never_touches_the_store(tmp_path):
    path = tmp_path / "mlflow.db"
    helper = BackgroundTracking.start(TrackingConfig(uri=f"sqlite:///{path}"))
    assert helper is not None
    helper.close()
    assert helper._process.returncode is not None
    assert not path.exists() and not Path(f"{path}.lock").exists()


def test_tracking_off_starts_no_helper():
    assert BackgroundTracking.start(TrackingConfig(enabled=False)) is None


def test_serve_opens_the_store_then_logs_and_answers_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder, config = run_folder(tmp_path, uri)
    from dataclasses import asdict

    lines = [json.dumps(asdict(config)), json.dumps(OPEN), json.dumps({"folder": str(folder)}), "never read"]
    answers: list[dict] = []
    serve(iter(lines), answers.append)
    (answer,) = answers
    assert answer["error"] is None and [r["info"]["run_id"] for r in logged(uri)] == [answer["run_id"]]


def test_the_helper_and_its_fallback_connect_with_the_real_uri_not_the_redacted_one_in_run_json(tmp_path):
    from dataclasses import asdict, replace

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder, config = run_folder(tmp_path, "http://***@127.0.0.1:9", timeout_s=1.0)  # as run.json shows a password URI
    config = replace(config, uri=uri)
    answers: list[dict] = []
    serve(iter([json.dumps(asdict(config)), json.dumps(OPEN), json.dumps({"folder": str(folder)})]), answers.append)
    helper = BackgroundTracking.start(config)
    assert helper is not None
    helper._process.kill()
    helper._process.wait()
    fallback = helper.log(folder)  # the helper died: logged in this process
    assert answers[0]["error"] is None and {r["info"]["run_id"] for r in logged(uri)} == {
        answers[0]["run_id"],
        fallback,
    }


def test_serve_reports_a_store_it_could_not_open_without_trying_again(tmp_path):
    folder, config = run_folder(tmp_path, "http://127.0.0.1:9", timeout_s=1.0)
    from dataclasses import asdict

    answers: list[dict] = []
    serve(iter([json.dumps(asdict(config)), json.dumps(OPEN), json.dumps({"folder": str(folder)})]), answers.append)
    (answer,) = answers
    assert answer["run_id"] is None and answer["error"].split(":")[0].endswith(("Exception", "Error"))


@pytest.mark.parametrize("lines", [[], ['{"uri": "sqlite:///x.db"}']])
def test_serve_ends_quietly_when_the_parent_ends_early(tmp_path, lines, monkeypatch):
    monkeypatch.chdir(tmp_path)
    answers: list[dict] = []
    serve(iter(lines), answers.append)
    assert answers == [] and not (tmp_path / "x.db").exists()


def test_on_a_busy_machine_the_helper_waits_for_the_table_before_loading_mlflow(tmp_path, monkeypatch):
    import tracking.background as background

    path = tmp_path / "mlflow.db"
    helper = BackgroundTracking.start(TrackingConfig(uri=f"sqlite:///{path}"))
    assert helper is not None
    monkeypatch.setattr(background, "core_free", lambda: False)
    helper.open(only_if_idle=True)  # not sent: the helper may still be stopped at once
    helper.close()
    assert helper._process.returncode is not None and not path.exists()


def test_a_detached_helper_settles_the_folder_and_a_logged_folder_is_not_logged_twice(tmp_path, capsys):
    from dataclasses import asdict

    from tracking.folder import TRACKED_FILE, main

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder, config = run_folder(tmp_path, uri)
    answers: list[dict] = []
    serve(iter([json.dumps(asdict(config)), json.dumps({"folder": str(folder), "detach": True})]), answers.append)
    (run,) = logged(uri)
    assert answers == []  # the parent is gone: the outcome goes to the folder
    assert json.loads((folder / TRACKED_FILE).read_text())["run_id"] == run["info"]["run_id"]
    assert main([str(folder)]) == 0 and len(logged(uri)) == 1
    assert "already logged as run" in capsys.readouterr().out
    assert main([str(folder), "--again"]) == 0 and len(logged(uri)) == 2


def test_a_detached_helper_that_fails_writes_why_and_says_it_on_the_terminal(tmp_path, capsys):
    from dataclasses import asdict

    from tracking.folder import TRACKED_FILE

    folder, config = run_folder(tmp_path, "http://127.0.0.1:9", timeout_s=1.0)
    message = {"folder": str(folder), "detach": True, "plots": True}
    serve(iter([json.dumps(asdict(config)), json.dumps(message)]), lambda answer: None)
    outcome = json.loads((folder / TRACKED_FILE).read_text())
    assert "run_id" not in outcome and outcome["error"] and outcome["log_later"].startswith("python -m tracking")
    err = capsys.readouterr().err
    assert "plots of the run" in err and f"python -m sim.plots {folder}" in err  # no timelines in this folder
    assert "was not logged to MLflow" in err and f"python -m tracking {folder}" in err

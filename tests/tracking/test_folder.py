"""One folder is one MLflow run: concurrent loggers of a folder make one run, a logger killed
mid-way leaves a RUNNING run that the report skips and names and that the next logging finishes."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests import subprocess_env
from tests.tracking.test_report import summary
from tracking.folder import PARAMS_FILE, SUMMARY_FILE, TRACKED_FILE, RunRecord
from tracking.report import main as report
from tracking.store import TrackingConfig

ROOT = Path(__file__).resolve().parents[2]


def run_folder(tmp_path: Path, uri: str, name: str, files: int = 0) -> Path:
    """A finished run's folder, to be logged to `uri` (experiment "one"), with `files` extra artifacts."""
    folder = tmp_path / name
    folder.mkdir()
    params = {"policy": {"name": name}, "trace": {"name": "azure_chat", "rate_scale": 1.0}}
    (folder / PARAMS_FILE).write_text(yaml.safe_dump(params))
    (folder / SUMMARY_FILE).write_text(json.dumps(summary(900.0, 10.0, 800, 150, 0, 50)))
    extra = [f"f{k}.txt" for k in range(files)]
    for artifact in extra:
        (folder / artifact).write_text(artifact)
    RunRecord(TrackingConfig(uri=uri, experiment="one"), run_name=name, artifacts=(SUMMARY_FILE, *extra)).write(folder)
    return folder


def logger(tmp_path: Path, folder: Path) -> subprocess.Popen[str]:
    """`python -m tracking FOLDER` in a subprocess (cwd tmp_path: MLflow's artifacts go under it)."""
    env = subprocess_env()
    cmd = [sys.executable, "-m", "tracking", str(folder)]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def runs(db: Path) -> list[tuple[str, str]]:
    """(run id, status) of every run in the store, read with sqlite3 (no MLflow import needed)."""
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=10) as con:
        try:
            return con.execute("SELECT run_uuid, status FROM runs").fetchall()
        except sqlite3.OperationalError:  # the store's tables are not created yet
            return []


@pytest.mark.slow
def test_two_loggers_of_one_folder_at_once_make_one_finished_run(tmp_path):
    db = tmp_path / "mlflow.db"
    folder = run_folder(tmp_path, f"sqlite:///{db}", "truncation", files=20)
    procs = [logger(tmp_path, folder) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0]
    ((run_id, status),) = runs(db)
    assert status == "FINISHED" and json.loads((folder / TRACKED_FILE).read_text())["run_id"] == run_id
    lines = (f"{folder}: logged as run {run_id}", f"{folder}: already logged as run {run_id} ({TRACKED_FILE}); "
             "--again logs it once more")  # fmt: skip
    for out in outs:  # the second found the folder logged (before or after waiting for the first)
        assert out.strip().splitlines()[-1] in lines


@pytest.mark.slow
def test_a_logger_killed_mid_way_is_skipped_by_the_report_then_finished_by_the_next(tmp_path, caplog, capsys):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    done = logger(tmp_path, run_folder(tmp_path, uri, "none"))
    assert done.wait(timeout=120) == 0
    folder = run_folder(tmp_path, uri, "truncation", files=400)
    proc = logger(tmp_path, folder)
    try:
        deadline = time.monotonic() + 120
        while not [r for r in runs(db) if r[1] == "RUNNING"]:  # created; its 400 artifacts being copied
            assert proc.poll() is None and time.monotonic() < deadline, "the logger never started its run"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    ((orphan, _),) = [r for r in runs(db) if r[1] == "RUNNING"]
    assert not (folder / TRACKED_FILE).exists()
    argv = ["--tracking-uri", uri, "--experiment", "one", "--out", str(tmp_path / "report")]
    with caplog.at_level(logging.WARNING, logger="tracking.report"):
        assert report(argv) == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warning.startswith(f"sim.report: 1 unfinished run(s) skipped: {orphan[:8]} (RUNNING, 'truncation')")
    assert "1 runs compared" in capsys.readouterr().out

    again = logger(tmp_path, folder)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0 and out.strip().splitlines()[-1] == f"{folder}: logged as run {orphan}"
    assert sorted(status for _, status in runs(db)) == ["FINISHED", "FINISHED"]  # the same run, finished
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tracking.report"):
        assert report(argv) == 0
    assert not caplog.records and "2 runs compared" in capsys.readouterr().out

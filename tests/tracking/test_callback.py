"""The sweep's parent run: opened before the jobs, and at the end given the report comparing its
runs (tracking.report) as artifacts, then closed, the console given their table; with nothing to
compare, one warning."""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from omegaconf import OmegaConf

from tests.tracking.test_report import RUNS, summary
from tracking import TrackingConfig, log_run
from tracking.callback import REPORT_DIR, SweepTracking
from tracking.sweep import SweepInfo


def sweep_config(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return OmegaConf.create(
        {
            "tracking": {"uri": uri, "experiment": "sweeps"},
            "hydra": {"sweep": {"dir": str(tmp_path / "multirun")}, "sweeper": {"params": None},
                      "overrides": {"task": ["policy=none,truncation,adaptive_gen"]}},
        }
    )  # fmt: skip


def parent_run(tmp_path: Path, policies: tuple[str, ...]):
    """A sweep opened, `policies` logged as its jobs, then ended; the parent run."""
    from mlflow import MlflowClient

    config = sweep_config(tmp_path)
    SweepTracking().on_multirun_start(config)
    info = SweepInfo.read(tmp_path / "multirun")
    assert info.parent_run_id is not None and info.swept == ("policy",)
    for policy in policies:
        tracking = TrackingConfig(uri=config.tracking.uri, experiment="sweeps", run_name=policy)
        params = {"policy": {"name": policy}, "trace": {"name": "azure_chat", "rate_scale": 1.0}}
        assert log_run(tracking, params, summary(*RUNS[policy]), parent_run_id=info.parent_run_id)
    SweepTracking().on_multirun_end(config)
    return MlflowClient(config.tracking.uri), MlflowClient(config.tracking.uri).get_run(info.parent_run_id)


def test_the_parent_run_gets_the_report_of_its_runs_and_the_console_their_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    client, parent = parent_run(tmp_path, ("none", "truncation", "adaptive_gen"))
    assert parent.info.status == "FINISHED"
    stored = {a.path for a in client.list_artifacts(parent.info.run_id, REPORT_DIR)}
    assert {f"{REPORT_DIR}/comparison.md", f"{REPORT_DIR}/comparison.csv", f"{REPORT_DIR}/pareto.md"} <= stored
    table = (tmp_path / "multirun" / REPORT_DIR / "comparison.md").read_text()
    assert all(f"| {policy} |" in table for policy in RUNS)
    # the console ends with the combined table and the command that writes the report again
    lines = capsys.readouterr().out.splitlines()
    start = lines.index(f"sweep of 3 runs ({tmp_path / 'multirun'}):")
    group, header, _, *rows, where, command = lines[start + 1 :]
    assert group == "azure_chat, rate ×1:" and header.split()[:3] == ["run", "energy", "(kJ)"]
    # energy in kJ and savings in %, one row a run, as in comparison.md (sorted by policy)
    assert [row.split()[:3] for row in rows] == [["adaptive_gen", "0.9", "10"], ["none", "1", "0"],
                                                 ["truncation", "0.8", "20"]]  # fmt: skip
    assert where.startswith(f"full report (comparison.md, pareto.md, plots) in {tmp_path / 'multirun' / REPORT_DIR}")
    assert shlex.split(command) == [
        "python", "-m", "sim.report", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--experiment",
        "sweeps", "--parent", parent.info.run_id, "--out", str(tmp_path / "multirun" / REPORT_DIR),
    ]  # fmt: skip


def test_a_sweep_without_finished_runs_closes_its_parent_with_one_warning(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING):
        client, parent = parent_run(tmp_path, ())
    assert parent.info.status == "FINISHED"
    assert client.list_artifacts(parent.info.run_id) == []
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert line.startswith("MLflow: no report for the sweep's parent run") and "has no runs" in line

"""A sweep with tracking off still ends with its combined table and report, read from the jobs'
folders (`tracking.report.load_folders`); `python -m sim.report --folders` reads them too."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import subprocess_env
from tracking import report
from tracking.folder import RUN_FILE

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # a sweep of three runs in a subprocess: CI runs these, the quick set does not


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A three-clock sweep of 300 requests, tracking off: its folder and console."""
    out = tmp_path_factory.mktemp("sweep") / "multirun"
    args = ["-m", "gpu.clock_mhz=990,1410,1980", "trace.max_requests=300", "tracking.enabled=false",
            "uncertainty.samples=0", "plots=false", f"hydra.sweep.dir={out}"]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "sim", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=subprocess_env(),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


def test_a_sweep_without_tracking_ends_with_its_table_and_report(sweep: tuple[Path, str]) -> None:
    out, console = sweep
    assert "sweep of 3 runs" in console and "none clock_mhz=990" in console
    assert "clock sweep (azure_chat, rate ×1, 300 requests, none): against" in console
    assert f"python -m sim.report --folders {out} --out {out / 'report'}" in console
    assert {"comparison.md", "clocks.png", "pareto.png"} <= {p.name for p in (out / "report").iterdir()}


def test_the_report_reads_run_folders_as_mlflow_would_have_logged_them(sweep: tuple[Path, str], tmp_path: Path):
    out, _ = sweep
    runs = report.load_folders(out)
    assert sorted(runs["run_id"]) == ["0", "1", "2"] and (runs["status"] == "FINISHED").all()
    summary = json.loads((out / "0" / "summary.json").read_text())
    first = runs.set_index("run_id").loc["0"]
    assert first["metrics.energy_j"] == summary["energy_j"] and first["params.gpu.clock_mhz"] == "990"
    assert "params.trace.arrival" not in runs.columns  # a key the run does not read is not a param
    table = report.comparison_table(runs)
    assert sorted(table["clock_mhz"]) == ["1410", "1980", "990"]


def test_a_folder_whose_run_did_not_complete_is_named_and_left_out(
    sweep: tuple[Path, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out, _ = sweep
    copy = tmp_path / "copy"
    for name in ("0", "1", "2"):
        shutil.copytree(out / name, copy / name)
    (copy / "2" / RUN_FILE).write_text(json.dumps({"status": "failed", "reason": "a test"}))
    runs = report.load_folders(copy)
    assert sorted(runs["run_id"]) == ["0", "1"]
    assert "1 unfinished run(s) skipped: 2 (FAILED" in caplog.text
    assert report.main(["--folders", str(copy), "--out", str(tmp_path / "r")]) == 0
    with pytest.raises(report.ReportError, match="no run folders"):
        report.load_folders(tmp_path / "r")

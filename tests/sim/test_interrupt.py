"""A run stopped part-way (SIGINT, SIGTERM, SIGKILL, a full disk): one line saying what was kept,
its run.json saying why, no half-written file under a final name, and `python -m tracking` on the
folder saying why there is nothing to log."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import subprocess_env
from tracking.folder import log_folder
from tracking.folder import main as log_later
from tracking.store import TrackingError

ROOT = Path(__file__).resolve().parents[2]
LONG = ("trace=synthetic", "trace.num_requests=2000000", "trace.rate_per_s=50", "trace.n_in=512", "trace.n_out=128")
"""A trace that simulates for seconds (lengths inside the oracle's range: no warning on stderr)."""
FINAL = {"requests.parquet", "requests_baseline.parquet", "summary.json", "timelines.parquet"}


def sim_command(tmp_path: Path, *overrides: str) -> list[str]:
    over = ("background=false", "progress=false", "plots=false", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
            f"output_dir={tmp_path / 'out'}", f"hydra.run.dir={tmp_path / 'hydra'}")  # fmt: skip
    return [sys.executable, "-m", "sim", *LONG, *over, *overrides]


def wait_simulating(proc: subprocess.Popen[str], out: Path, timeout_s: float = 60) -> None:
    """Until the run has claimed `out` and opened its records file (a temporary name): it simulates."""
    deadline = time.monotonic() + timeout_s
    while not (out.is_dir() and any(p.name.endswith(".tmp.parquet") for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not start simulating"
        time.sleep(0.02)


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_prints_one_line_marks_the_folder_and_leaves_no_half_written_file(tmp_path, signum, status, capsys):
    out = tmp_path / "out"
    proc = subprocess.Popen(sim_command(tmp_path), cwd=tmp_path, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_simulating(proc, out)
        time.sleep(0.3)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    name = signal.Signals(signum).name
    assert proc.returncode == status and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"sweetspot-sim: interrupted ({name}); ") and line.endswith("(run.json says interrupted)")
    left = {p.name for p in out.iterdir()}
    assert not left & FINAL and not [n for n in left if ".tmp." in n]  # no final name, no temporary file
    kept = left - {"run.json"}
    assert all(".partial." in n for n in kept) and (
        f"kept in {out}: " in line if kept else "nothing was written" in line
    )
    assert json.loads((out / "run.json").read_text()) == {"status": "interrupted", "pid": proc.pid, "reason": name}
    capsys.readouterr()
    assert log_later([str(out)]) == 1
    assert capsys.readouterr().out == f"{out}: the run was interrupted ({name}); nothing to log\n"


def test_a_killed_run_is_reported_as_killed_and_its_records_are_not_under_their_name(tmp_path, capsys):
    out = tmp_path / "out"
    proc = subprocess.Popen(sim_command(tmp_path), cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_simulating(proc, out)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert not {p.name for p in out.iterdir()} & FINAL
    assert log_later([str(out)]) == 1
    assert capsys.readouterr().out == f"{out}: the run was killed; nothing to log\n"
    with pytest.raises(TrackingError, match="the run was killed; nothing to log"):
        log_folder(out)  # the Python API says the same, not a KeyError


FULL_DISK = """
import errno, sys
import pyarrow.parquet as pq

def full(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

pq.ParquetWriter.write_table = full
sys.argv = ["sim", *sys.argv[1:]]
from sim.__main__ import main
main()
"""


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    over = ("trace.num_requests=200", "tracking.enabled=false")
    cmd = [sys.executable, "-c", FULL_DISK, *sim_command(tmp_path, *over)[3:]]
    done = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120)
    out = tmp_path / "out"
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: could not write {out / 'requests.parquet'} (No space left on device); ")
    assert line.endswith("(run.json says failed)")
    assert json.loads((out / "run.json").read_text())["status"] == "failed"
    assert not {p.name for p in out.iterdir()} & FINAL

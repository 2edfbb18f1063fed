"""Parallel sweeps through Hydra's real runner: every run logged, every folder its own."""

from __future__ import annotations

import fcntl
import os
import shlex
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from tests import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
TINY = ["trace=synthetic", "trace.num_requests=60", "progress=false", "plots=false"]


def sim(cwd: Path, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim", *overrides], cwd=cwd, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def on_a_terminal(cwd: Path, *overrides: str, timeout: float = 300) -> tuple[int, str, str]:
    """`python -m sim` with stderr on a real pseudo-terminal (where a bar draws): its exit status,
    stdout, and what the terminal received."""
    main, side = os.openpty()
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns: tqdm draws in 0 none
    shown = bytearray()
    reader = threading.Thread(target=_drain, args=(main, shown), daemon=True)
    reader.start()
    command = [sys.executable, "-m", "sim", *overrides]
    with subprocess.Popen(
        command, cwd=cwd, env=subprocess_env(), stdout=subprocess.PIPE, stderr=side, text=True
    ) as proc:
        os.close(side)
        out = proc.communicate(timeout=timeout)[0]
    reader.join(timeout=10)
    return proc.returncode, out, shown.decode(errors="replace")


def _drain(fd: int, into: bytearray) -> None:
    """Read the terminal `fd` into `into` until every process holding its other side has ended."""
    try:
        while chunk := os.read(fd, 4096):
            into += chunk
    except OSError:  # EIO: the other side is closed
        pass
    finally:
        os.close(fd)


def runs(folder: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["sweetspot-sim"])


def mlflow_client():
    """A client of the store `runs` last read."""
    import mlflow

    return mlflow.MlflowClient()


@pytest.mark.slow
def test_a_parallel_sweep_of_8_jobs_in_a_fresh_folder_logs_every_run_every_time(tmp_path):
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=8",
             "policy=none,truncation,adaptive_gen,summarization", "trace.rate_scale=1,2"]  # fmt: skip
    for trial in range(3):
        folder = tmp_path / f"trial{trial}"
        folder.mkdir()
        done = sim(folder, *sweep, *TINY)
        assert done.returncode == 0, done.stderr[-2000:]
        logged = runs(folder)
        parent = logged[logged["tags.kind"] == "sweep"]
        jobs = logged[logged["tags.kind"] != "sweep"]
        assert len(parent) == 1 and len(jobs) == 8, done.stderr[-2000:]
        assert (jobs["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
        report = mlflow_client().list_artifacts(parent["run_id"].iloc[0], "report")
        assert "report/comparison.md" in {a.path for a in report}  # the sweep's report, on its parent run
        assert (jobs["status"] == "FINISHED").all()
        assert sorted(jobs["tags.mlflow.runName"]) == sorted(
            f"{p} rate_scale={r}" for p in ("none", "truncation", "adaptive_gen", "summarization") for r in (1, 2)
        )
        # one baseline per (trace, fleet, server) and load: simulated twice, reused by the other shaped runs
        assert sorted(jobs["tags.baseline"].dropna()) == ["cached"] * 4 + ["simulated"] * 2
        folders = {Path(a) for a in jobs["artifact_uri"]}
        assert len(folders) == 8


def test_runs_started_together_get_their_own_folders(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-m", "sim", *TINY, "tracking.enabled=false", f"policy={p}"], cwd=tmp_path,
                         env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for p in ("truncation", "adaptive_gen")
    ]  # fmt: skip
    assert all(p.wait(timeout=120) == 0 for p in procs)
    summaries = sorted(tmp_path.glob("outputs/*/*/summary.json"))
    assert len(summaries) == 2
    assert {s.read_text().split('"policy": ')[1].split('"')[1] for s in summaries} == {"truncation", "adaptive_gen"}


def test_a_bad_job_fails_alone_and_the_sweep_exits_1(tmp_path):
    done = sim(tmp_path, "-m", "policy=adaptive_gen", "policy.factor=-1,0.5", "tracking.enabled=false", *TINY)
    assert done.returncode == 1 and "policy.factor must be > 0, got -1.0" in done.stderr
    assert len(list(tmp_path.glob("multirun/*/*/*/summary.json"))) == 1  # the good job ran after the bad one


@pytest.mark.slow
def test_a_parallel_sweep_on_a_terminal_draws_no_bars_and_ends_with_the_combined_table(tmp_path):
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "policy=none,truncation", "trace=synthetic",
             "trace.num_requests=60", "plots=false", "progress=true"]  # fmt: skip
    status, out, terminal = on_a_terminal(tmp_path, *sweep)
    assert status == 0, terminal[-2000:]
    assert "sim-s" not in terminal and "%|" not in terminal, terminal  # no bar, not even a first frame
    jobs = sorted(line.split(":")[0] for line in out.splitlines() if ": energy " in line)
    assert jobs == ["none", "truncation"] and "per output token" not in out  # one line a job, not its table
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("sweep of 2 runs ("))
    rows = [line.split()[0] for line in lines[start + 4 : -2]]  # after the group, the header and the rule
    assert rows == ["none", "truncation"] and lines[-2].startswith("full report (comparison.md")
    command = shlex.split(lines[-1])
    assert command[:3] == ["python", "-m", "sim.report"]
    again = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "2 runs compared" in again.stdout, again.stdout + again.stderr
    tables = sorted(tmp_path.glob("multirun/*/*/[01]/table.txt"))  # each job's full table is in its folder
    assert len(tables) == 2 and all(t.read_text().splitlines()[2].startswith("energy (kJ)") for t in tables)

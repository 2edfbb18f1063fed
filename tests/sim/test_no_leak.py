"""A password in tracking.uri reaches no file of the run's folder, no console line and nothing the
MLflow server stores, whether the server answers or not; the run still logs with it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import subprocess_env

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "s3cretPW"
TINY = ("trace=synthetic", "trace.num_requests=40", "trace.n_in=100", "trace.n_out=50", "policy=truncation",
        "progress=false", "plots=false", "tracking.timeout_s=1")  # fmt: skip
SERVER_START_S = 45.0  # a fresh `mlflow server` takes 10 to 30 s on a busy 2-core machine


def simulate(cwd: Path, folder: Path, uri: str, *args: str, sweep: bool = False) -> subprocess.CompletedProcess[str]:
    """`python -m sim` on a tiny trace into `folder` (Hydra's own files too), tracking to `uri`;
    `sweep`: a multirun, `folder` its sweep folder."""
    env = subprocess_env()
    where = ["--multirun", f"hydra.sweep.dir='{folder}'"] if sweep else [f"hydra.run.dir='{folder}'"]
    command = [sys.executable, "-m", "sim", *where, *TINY, f"tracking.uri={uri}", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def leaks(folder: Path) -> list[str]:
    """The files under `folder` that hold the password."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and PASSWORD.encode() in p.read_bytes()]


@pytest.mark.slow
def test_an_unreachable_server_leaves_no_password_in_the_folder_or_on_the_console(tmp_path):
    folder = tmp_path / "run"
    done = simulate(tmp_path, folder, f"http://alice:{PASSWORD}@127.0.0.1:9", "background=false")
    assert done.returncode == 0, done.stderr[-2000:]
    console = done.stdout + done.stderr
    assert "MLflow tracking to 'http://***@127.0.0.1:9' failed" in console and "Log it later with" in console
    assert PASSWORD not in console
    assert (folder / "summary.json").exists() and (folder / ".hydra" / "overrides.yaml").exists()
    assert leaks(folder) == []


@pytest.mark.slow
def test_a_sweep_leaves_no_password_in_its_folders_or_on_the_console(tmp_path):
    folder = tmp_path / "sweep"
    done = simulate(tmp_path, folder, f"http://alice:{PASSWORD}@127.0.0.1:9", "seed=1,2", sweep=True)
    assert done.returncode == 0, done.stderr[-2000:]
    console = done.stdout + done.stderr
    assert console.count("#0 : ") == 1 and console.count("MLflow tracking to 'http://***@127.0.0.1:9' failed") == 2
    assert PASSWORD not in console
    assert (folder / "multirun.yaml").exists() and (folder / "1" / ".hydra" / "overrides.yaml").exists()
    assert leaks(folder) == []


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A local MLflow server on 127.0.0.1 (no authentication): its URL without credentials."""
    root = tmp_path_factory.mktemp("server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = ("--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--default-artifact-root", str(root / "art"))
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
               *store]  # fmt: skip
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        if not _healthy(url, process, SERVER_START_S):
            pytest.skip(f"a local `mlflow server` did not answer within {SERVER_START_S:g} s")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its workers: the group this test started
        process.wait(timeout=30)


def _healthy(url: str, process: subprocess.Popen, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


@pytest.mark.slow
def test_a_run_logged_to_a_server_sends_and_keeps_no_password(tmp_path, server):
    import mlflow

    folder = tmp_path / "run"
    shown = server.replace("http://", "http://***@")
    # background=true; a fresh server on a busy 2-core machine may take over TINY's 1 s to answer a log-batch
    done = simulate(tmp_path, folder, server.replace("http://", f"http://alice:{PASSWORD}@"), "tracking.timeout_s=30")
    assert done.returncode == 0, done.stderr[-2000:]
    assert PASSWORD not in done.stdout + done.stderr and "View run" in done.stderr + done.stdout
    assert leaks(folder) == []
    run_id = json.loads((folder / "tracking.json").read_text())["run_id"]
    client = mlflow.MlflowClient(server)
    run = client.get_run(run_id)
    assert run.data.params["tracking.uri"] == shown and f"tracking.uri={shown}" in run.data.tags["overrides"]
    assert PASSWORD not in json.dumps(run.to_dictionary())
    artifacts = Path(client.download_artifacts(run_id, "", str(tmp_path / "artifacts")))
    assert {"run.json", "resolved_config.yaml"} <= {p.name for p in artifacts.iterdir()} and leaks(artifacts) == []

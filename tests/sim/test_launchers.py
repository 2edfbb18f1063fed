"""The shipped launcher configs: every one composes, and the Ray ones run a sweep on a real local Ray."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[2]
LAUNCHERS = sorted(p.stem for p in (ROOT / "conf" / "hydra" / "launcher").glob("*.yaml"))
PLUGINS = {"ray": "hydra_plugins.hydra_ray_launcher", "slurm": "hydra_plugins.hydra_submitit_launcher"}
TOKEN = secrets.token_hex(32)
SWEEP = [
    "policy=none,truncation",
    "trace=synthetic",
    "trace.num_requests=200",
    "tracking.enabled=false",
    "plots=false",
    "compare_baseline=false",
    "progress=false",
]


def _plugin(name: str) -> str:
    return next(module for prefix, module in PLUGINS.items() if name.startswith(prefix))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.slow  # needs the ray and slurm extras
@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_shipped_launcher_config_composes_and_builds_its_launcher(name):
    if not _installed(_plugin(name)):
        pytest.skip(f"{_plugin(name)} is not installed")
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("sim", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__module__.startswith(_plugin(name))
    if name.startswith("ray"):
        assert "object_store_memory" in cfg.hydra.launcher.ray.init  # never left to the plugin's default


def test_launcher_list_covers_both_ray_configs():
    assert {"ray_local", "ray_cluster"} <= set(LAUNCHERS)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray picks 127.0.0.1 for every address it chooses
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_AUTH_MODE"], env["RAY_AUTH_TOKEN"] = "token", TOKEN  # not ~/.ray/auth_token
    return {**env, **extra}


def _sweep(launcher: str, sweep_dir: Path, env: dict[str, str]) -> list[dict]:
    cmd = [sys.executable, "-m", "sim", "-m", f"hydra/launcher={launcher}", *SWEEP, f"hydra.sweep.dir={sweep_dir}"]
    done = subprocess.run(cmd, cwd=sweep_dir.parent, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads((sweep_dir / str(k) / "summary.json").read_text()) for k in range(2)]


def _check(summaries: list[dict]) -> None:
    assert [s["policy"] for s in summaries] == ["none", "truncation"]
    assert all(s["requests"] == 200 and s["energy_j"] > 0 for s in summaries)
    assert summaries[1]["input_tokens_dropped"] > 0 == summaries[0]["input_tokens_dropped"]


@pytest.mark.slow
def test_ray_local_sweep_runs_on_a_loopback_ray(tmp_path):
    pytest.importorskip("ray")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    _check(_sweep("ray_local", tmp_path / "sweep", _env()))


@pytest.fixture
def ray_head():
    """A Ray head on 127.0.0.1 in its own process group (`ray start --block`), stopped afterwards."""
    pytest.importorskip("ray")
    ray_bin = Path(sys.executable).parent / "ray"
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths live under it
    cmd = [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--port=0", "--num-cpus=2",
           "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"]  # fmt: skip
    head = subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        address = temp / "ray_current_cluster"
        deadline = time.monotonic() + 60
        while not address.exists() and head.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert address.exists(), "the Ray head did not start"
        yield address.read_text().strip()
    finally:
        head.terminate()  # `ray start --block` stops its processes on SIGTERM
        try:
            head.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)  # whatever outlived it
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_ray_cluster_sweep_joins_a_running_cluster(tmp_path, ray_head):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    _check(_sweep("ray_cluster", tmp_path / "sweep", _env(RAY_ADDRESS=ray_head)))

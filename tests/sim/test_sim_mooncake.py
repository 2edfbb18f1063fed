"""A Mooncake trace runs through the simulator from the command line, its `hash_ids` kept."""

import json
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sim.app import prepare
from sim.run_config import app_config
from tests import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def test_python_m_sim_runs_the_mooncake_conversation_trace(tmp_path):
    args = ["trace=mooncake_conversation", "trace.max_requests=200", "background=false", "tracking.enabled=false",
            "plots=false", "progress=false", f"output_dir={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'hydra'}"]  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "sim", *args], cwd=tmp_path, capture_output=True, text=True,
                          env=subprocess_env(), timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "200 requests over" in output and "prompt blocks repeat an earlier block" in output
    assert "OracleRangeWarning" in output  # prompts of 12k tokens on average: outside the calibrated range
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["completed"] == 200


def test_the_simulators_requests_keep_the_hash_ids(tmp_path):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("sim", overrides=[f"output_dir={tmp_path}", "trace=mooncake_synthetic", "trace.max_requests=50"])
    requests = prepare(app_config(OmegaConf.to_container(cfg, resolve=True))).requests
    assert len(requests) == 50 and requests["hash_ids"].list.len().sum() > 50
    assert (requests["hash_ids"].list.len().to_numpy() <= -(-requests["n_in"].to_numpy() // 512)).all()

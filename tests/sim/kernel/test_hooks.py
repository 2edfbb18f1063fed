"""The compiled hooks' dispatch (`sim.kernel.hooks`): written from the scheduler registry into the
kernel's cache folder, and still written and run when that folder cannot be created."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.kernel import CACHE_DIR, hooks
from sim.schedulers import SCHEDULERS

RUN = """
import json, traces
from oracle.model import Oracle
from sim.config import ServerConfig
from sim.kernel import CACHE_DIR, hooks
from sim.serving.run import simulate
requests = traces.load("synthetic", num_requests=400, rate_per_s=20.0, seed=3)
r = simulate(requests, Oracle.load("llama-3.1-8b_h100"), ServerConfig(scheduler="sglang", kv_capacity_tokens=6000))
print(json.dumps({"energy": r.requests["energy_j"].tolist(), "dispatch": hooks._dispatch.__file__}))
"""


def run(env: dict[str, str]) -> dict[str, object]:
    root = Path(__file__).resolve().parents[3]
    out = subprocess.run([sys.executable, "-c", RUN], cwd=root, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_dispatch_lives_in_the_kernel_s_cache_folder_and_codes_every_scheduler():
    assert Path(hooks._dispatch.__file__).parent == CACHE_DIR
    assert set(hooks.CODES) == set(SCHEDULERS) and hooks.CODES["vllm"] == 0 and hooks.CODES["sglang"] > 0


@pytest.mark.slow  # compiles the whole kernel afresh in a subprocess (about a minute on 2 cores)
def test_an_uncreatable_cache_folder_still_runs_the_schedulers_compiled_hooks(tmp_path):
    """The user cache folder is under a file: the dispatch goes to a temporary folder, the results
    are those of a normal run."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    normal = run(dict(os.environ))
    fallback = run({**os.environ, "XDG_CACHE_HOME": str(blocker)})
    assert fallback["energy"] == normal["energy"]
    assert not str(fallback["dispatch"]).startswith(str(blocker))

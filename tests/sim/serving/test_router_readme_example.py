"""The README's example router (`soonest_free`), whole, as a new module of a copy of `sim`: one
module and nothing else makes it run a fleet in the compiled loop, with the same results as its
Python `pick` under SimPy."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]

RUN = """
import json
import traces
from oracle.model import Oracle
from sim.config import ServerConfig, SloConfig
from sim.kernel import CACHE_DIR, picks
from sim.serving import routed
from sim.serving.fleet import Fleet
from sim.serving.routers import ROUTERS
from sim.serving.run import simulate_fleet

ran = []
original = routed.RoutedFleet.run
routed.RoutedFleet.run = lambda self, *a, **k: (ran.append(1), original(self, *a, **k))[1]
requests = traces.load("synthetic", num_requests=1500, rate_per_s=40.0, seed=5)
fleet = Fleet.single(Oracle.load("llama-3.1-8b_h100"), ServerConfig(), 4, "soonest_free", SloConfig())
compiled = simulate_fleet(requests, fleet)
compiled_runs = len(ran)
ROUTERS["soonest_free"].kernel_pick = None  # the same fleet under SimPy, asking its Python pick
simpy_run = simulate_fleet(requests, fleet)
print(json.dumps({
    "compiled_runs": compiled_runs,
    "simpy_runs": len(ran) - compiled_runs,
    "coded": "soonest_free" in picks.CODES,
    "kernel": str(CACHE_DIR),
    "energy": [compiled.requests["energy_j"].tolist(), simpy_run.requests["energy_j"].tolist()],
    "servers": [compiled.requests["server"].tolist(), simpy_run.requests["server"].tolist()],
}))
"""


def example() -> str:
    """The README's `soonest_free` block."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return next(b for b in blocks if "class SoonestFree" in b)


@pytest.mark.slow  # compiles the whole kernel afresh for the copy (about a minute on 2 cores)
def test_the_readme_router_runs_compiled_as_one_new_module(tmp_path):
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "sim", copy / "sim", ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "sim" / "serving" / "routers" / "soonest_free.py").write_text(example())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(copy), str(ROOT)]),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    out = subprocess.run([sys.executable, "-c", RUN], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["coded"] and result["compiled_runs"] == 1 and result["simpy_runs"] == 0
    assert result["kernel"].startswith(str(tmp_path / "cache"))
    compiled, simpy_run = result["energy"]
    assert compiled == simpy_run
    assert result["servers"][0] == result["servers"][1] and len(set(result["servers"][0])) == 4

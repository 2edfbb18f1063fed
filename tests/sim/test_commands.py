"""Commands users can find: --help lists what `sim` uses; policies from another installed package."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("trace", "policy", "server", "server/scheduler", "fleet", "experiment")


def _sim(cwd: Path, *args: str, path: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), path) if p)}
    return subprocess.run([sys.executable, "-m", "sim", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_help_lists_every_option_of_the_groups_sim_uses_and_no_other_group(tmp_path):
    out = _sim(tmp_path, "--help").stdout
    groups = out.split("== Groups (group=option) ==")[1].split("==")[0]
    for group in GROUPS:
        options = {p.stem for p in resources.files("conf").joinpath(group).iterdir() if p.name.endswith(".yaml")}
        (line,) = [x for x in groups.splitlines() if x.startswith(f"{group} ")]
        assert options == {o.strip() for o in line.split(":", 1)[1].split(",")}, group
    listed = {line.split()[0] for line in groups.splitlines() if line.strip()}
    assert listed == set(GROUPS)  # not model, gpu, calibrate: groups of other commands


def test_every_python_m_entry_point_has_a_console_script():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    targets = {v.split(":")[0] for v in scripts.values()}
    assert {"sim.__main__", "tracking.report", "tracking.folder", "sim.offline", "traces.cli", "calibrate.measure",
            "calibrate.fit", "oracle.show", "oracle.build"} <= targets  # fmt: skip
    import importlib

    for value in scripts.values():
        module, func = value.split(":")
        assert callable(getattr(importlib.import_module(module), func))


PLUGIN = """
from dataclasses import dataclass

import numpy as np

from sim.policies.base import Policy, Shaping


@dataclass(frozen=True)
class Config:
    keep: float = 0.5


class Halve(Policy):
    name = "halve"

    def __init__(self, keep):
        self.keep = keep

    def shape(self, n_in, n_out):
        n_out = np.maximum(1, (np.asarray(n_out) * self.keep).astype(np.int64))
        return Shaping(np.asarray(n_in, dtype=np.int64), n_out, np.zeros_like(n_out))


def build(config, context):
    return Halve(config.keep)
"""


def test_a_policy_from_another_installed_package_runs_by_name(tmp_path):
    site = tmp_path / "site"
    pkg = site / "myplug"
    (pkg / "conf" / "policy").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "conf" / "__init__.py").write_text("")
    (pkg / "halve.py").write_text(PLUGIN)
    (pkg / "conf" / "policy" / "halve.yaml").write_text("name: halve\nkeep: 0.5\n")
    info = site / "myplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sweetspot_sim.policies]\nhalve = myplug.halve\n")
    tiny = ("trace=synthetic", "trace.num_requests=50", "progress=false", "plots=false", "tracking.enabled=false")
    done = _sim(tmp_path, "policy=halve", "hydra.searchpath=[pkg://myplug.conf]", *tiny, path=str(site))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "energy savings vs none" in done.stdout and "50 of 50 requests shaped" in done.stdout

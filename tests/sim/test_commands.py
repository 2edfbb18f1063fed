"""Commands users can find: --help lists what `sim` uses; policies from another installed package."""

from __future__ import annotations

import json
import os
import re
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
    groups = out.split("== Groups (group=option; the options are the files of conf/GROUP/) ==")[1].split("==")[0]
    listed = {}  # Hydra's list of the config groups (its $APP_CONFIG_GROUPS): "group: a, b, c"
    for line in groups.split("\n\n", 1)[1].splitlines():
        if line.strip():
            group, options = line.split(": ", 1)
            listed[group] = {o.strip() for o in options.split(",")}
    for group in GROUPS:
        options = {p.stem for p in resources.files("conf").joinpath(group).iterdir() if p.name.endswith(".yaml")}
        assert listed[group] == options, group
    assert set(listed) - set(GROUPS) <= {"calibrate", "calibrate/grid"}  # calibrate.measure's, in the same tree


def test_every_python_m_entry_point_has_a_console_script():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    targets = {v.split(":")[0] for v in scripts.values()}
    assert {"sim.__main__", "tracking.report", "tracking.folder", "sim.planning.offline", "traces.cli",
            "calibrate.measure", "calibrate.fit", "oracle.show", "oracle.build"} <= targets  # fmt: skip
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


def _runs(store: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store}")
    return client.search_runs([client.get_experiment_by_name("sweetspot-sim").experiment_id])


def _folder(stdout: str) -> Path:
    (line,) = [line for line in stdout.splitlines() if line.startswith("results in ")]
    return Path(line.removeprefix("results in ").split(";")[0])


@pytest.mark.slow
def test_a_single_run_tracks_through_the_helper_and_a_bad_run_leaves_no_store(tmp_path):
    tiny = ("trace=synthetic", "trace.num_requests=50", "progress=false", "plots=false", "background=false")
    done = _sim(tmp_path, *tiny)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tracking in this process" not in done.stdout + done.stderr  # the helper logged it
    import mlflow

    (run,) = _runs(tmp_path / "mlflow.db")
    assert run.info.status == "FINISHED" and f"MLflow run {run.info.run_id}" in done.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert {"summary.json", "requests.parquet", "run.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    assert json.loads((_folder(done.stdout) / "tracking.json").read_text())["run_id"] == run.info.run_id
    bad = tmp_path / "bad"
    bad.mkdir()
    done = _sim(bad, *tiny, "policy=adaptive_gen", "policy.factor=-1")
    assert done.returncode == 1 and "policy.factor must be > 0" in done.stderr
    assert not (bad / "mlflow.db").exists()  # the helper was stopped before it opened the store


@pytest.mark.slow
def test_by_default_the_command_ends_after_the_table_and_a_background_process_plots_and_logs(tmp_path):
    done = _sim(tmp_path, "trace=synthetic", "trace.num_requests=50", "progress=false")
    # capture_output waits for the background process too: it holds the terminal's stderr
    assert done.returncode == 0, done.stderr[-2000:]
    assert "follow from a background process" in done.stdout and not re.search("MLflow run [0-9a-f]{32}", done.stdout)
    assert "sweetspot-sim:" not in done.stderr and "INFO mlflow" not in done.stderr
    folder = _folder(done.stdout)
    (run,) = _runs(tmp_path / "mlflow.db")
    assert json.loads((folder / "tracking.json").read_text())["run_id"] == run.info.run_id
    artifacts = set(json.loads((folder / "run.json").read_text())["artifacts"])
    assert {"power.png", "cdf.png", "batch.png", "energy_per_request.png", "timelines.parquet"} <= artifacts
    assert all((folder / a).stat().st_size > 0 for a in artifacts)
    import mlflow

    logged = {
        a.path for a in mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(run.info.run_id)
    }
    assert artifacts <= logged


@pytest.mark.slow
def test_a_background_process_that_cannot_log_says_so_on_the_terminal_and_in_the_folder(tmp_path):
    store = tmp_path / "store"
    store.write_text("not a folder")  # the store's parent is a file: SQLite cannot create it
    done = _sim(tmp_path, "trace=synthetic", "trace.num_requests=50", "progress=false", "plots=false",
                f"tracking.uri=sqlite:///{store}/mlflow.db", "tracking.timeout_s=1")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    folder = _folder(done.stdout)
    outcome = json.loads((folder / "tracking.json").read_text())
    assert "run_id" not in outcome and outcome["error"] and outcome["log_later"] == f"python -m tracking {folder}"
    assert f"the run in {folder} was not logged to MLflow" in done.stderr and "python -m tracking" in done.stderr


def test_the_readme_test_commands_use_their_own_venv_and_name_what_ci_runs():
    """The README's first two commands do not share a virtualenv, and its account of CI is .ci/run's."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    main_job, tests = re.findall(r"```bash\npython3 -m venv (\S+) ", readme)[:2]
    assert main_job != tests and f"{tests}/" in (ROOT / ".gitignore").read_text().splitlines()
    (install,) = re.findall(r'^python -m pip install --quiet ("torch==.*)$', ci, flags=re.M)
    assert f"`pip install {install}`" in readme.replace("\n", " "), f"the README does not say CI installs {install}"
    (line,) = re.findall(r"^python -m pytest -q -p no:cacheprovider (.*)$", ci, flags=re.M)
    assert f"`python -m pytest {line}`" in readme, f"the README does not say CI runs pytest {line}"

"""A run's folder, flags, objective, trace errors and explanations (the app, without Hydra's runner
except where the exit status and stderr are the point)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sim.app import RunContext, execute, prepare
from sim.results.summary import METRICS, unit
from sim.run_config import app_config, objective
from sim.schema import ConfigError
from tests import subprocess_env

ROOT = Path(__file__).resolve().parents[3]
TINY = ("trace=synthetic", "trace.num_requests=80", "progress=false", "plots=false", "tracking.enabled=false")


def config(out: Path, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("sim", overrides=[f"output_dir={out}", *TINY, *overrides])
    return app_config(OmegaConf.to_container(cfg, resolve=True))


@pytest.mark.parametrize("key", ["compare_baseline", "plots", "progress"])
def test_flags_given_as_words_are_rejected_with_the_accepted_values(tmp_path, key):
    with pytest.raises(ConfigError, match=rf"{key} must be true or false, got 'no'"):
        config(tmp_path, f"{key}=no")


def test_a_folder_that_holds_a_run_is_refused_before_any_work(tmp_path):
    execute(prepare(config(tmp_path / "out", "policy=truncation")))
    with pytest.raises(ConfigError, match="already holds a run"):
        prepare(config(tmp_path / "out", "policy=adaptive_gen"))
    prepared = prepare(config(tmp_path / "other"))
    (tmp_path / "other" / "run.json").write_text("{}")  # another run claimed it meanwhile
    with pytest.raises(ConfigError, match="already holds a run"):
        execute(prepared)


def test_an_output_folder_that_cannot_be_written_fails_before_loading_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"output_dir .*file/out.* is not writable"):
        prepare(config(blocker / "out", "trace.num_requests=10000000"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="is not writable"):
        prepare(config(ro))


def test_the_objective_is_the_configured_metric_or_metrics(tmp_path):
    one = config(tmp_path / "a", "policy=adaptive_gen", "policy.factor=0.3")
    summary = execute(prepare(one))
    assert objective(summary, one.objective) == summary.energy_savings_pct > 0
    both = config(tmp_path / "b", "objective=[energy_savings_pct,quality_cost_pct]")
    assert both.objective == ("energy_savings_pct", "quality_cost_pct")
    assert objective(summary, both.objective) == (summary.energy_savings_pct, summary.run.quality_cost_pct)
    assert objective(summary, ("ttft_s.p99",)) == summary.run.ttft_s.p99
    with pytest.raises(ConfigError, match="objective: 'energy_saving_pct' is not a summary metric"):
        config(tmp_path, "objective=energy_saving_pct")


def test_every_metric_key_has_a_unit_and_a_renamed_key_fails_loudly():
    assert unit("energy_j") == "J" and unit("ttft_s.p99") == "s" and unit("quality_cost_pct") == "%"
    assert unit("baseline.energy_j") == "J" and "energy_savings_pct" in METRICS
    with pytest.raises(KeyError, match="'energy_joules' is not a summary metric"):
        unit("energy_joules")


def test_a_policy_that_barely_saves_says_why(tmp_path, capsys):
    summary = execute(prepare(config(tmp_path, "policy=adaptive_gen", "policy.factor=4")))
    assert abs(summary.energy_savings_pct) < 1
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("why so little")]
    assert len(line) == 1 and "median" in line[0] and "outputs" in line[0]


@pytest.mark.slow
def test_the_baseline_is_simulated_once_per_sweep_folder(tmp_path):
    sweep = RunContext(("policy.factor=0.5",), tmp_path / "sweep")
    a = execute(prepare(config(tmp_path / "a", "policy=adaptive_gen", "policy.factor=0.5")), sweep)
    b = execute(prepare(config(tmp_path / "b", "policy=adaptive_gen", "policy.factor=0.7")), sweep)
    c = execute(prepare(config(tmp_path / "c", "policy=adaptive_gen", "trace.rate_scale=2")), sweep)
    assert (a.baseline_source, b.baseline_source, c.baseline_source) == ("simulated", "cached", "simulated")
    assert a.baseline.active_energy_j == b.baseline.active_energy_j != c.baseline.active_energy_j
    assert a.baseline.sim_wall_s == b.baseline.sim_wall_s  # the same simulation, read back
    assert math.isfinite(b.energy_savings_pct)


def _sim(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sim", *TINY, *overrides], cwd=tmp_path, capture_output=True,
                          text=True, env=subprocess_env(), timeout=120)  # fmt: skip


def test_a_bad_trace_file_under_python_m_sim_prints_the_message_alone_and_exits_1(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,n_in,n_out\n0.0,10,5\n1.0,ten,5\n")
    done = _sim(tmp_path, "trace=file", f"trace.path={bad}")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "Error executing job" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert "bad.csv" in line and "n_in" in line

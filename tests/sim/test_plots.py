"""Plots come from the run's folder alone: its timelines match the span logs, and
`python -m sim.plots` draws them again from a finished run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sim.app import app_config, execute, prepare
from sim.plots import PLOT_FILES, TIMELINES_FILE, main, timelines


def _run(tmp_path, *overrides):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("sim", overrides=[f"output_dir={tmp_path}", "trace.max_requests=300", "progress=false",
                                        "tracking.enabled=false", *overrides])  # fmt: skip
    return execute(prepare(app_config(OmegaConf.to_container(cfg, resolve=True))))  # type: ignore[arg-type]


def test_the_folder_holds_what_the_plots_draw_and_they_can_be_drawn_again(tmp_path, capsys):
    summary = _run(tmp_path, "policy=truncation")
    lines = pd.read_parquet(tmp_path / TIMELINES_FILE)
    assert sorted(set(lines["run"])) == [0, 1] and list(lines.columns) == [
        "t_s",
        "power_w",
        "running",
        "kv_used",
        "run",
    ]
    own = lines[lines["run"] == 0]
    width = float(own["t_s"].iloc[1] - own["t_s"].iloc[0])
    # the power timeline integrates to the run's energy, idle power included, over the common horizon
    assert float(own["power_w"].sum()) * width == pytest.approx(summary.run.energy_j, rel=1e-6)
    assert ((own["kv_used"] >= 0) & (own["kv_used"] <= 1)).all() and own["running"].max() > 1
    before = {f: (tmp_path / f).stat().st_mtime_ns for f in PLOT_FILES}
    for f in PLOT_FILES:
        (tmp_path / f).unlink()
    assert main([str(tmp_path)]) == 0
    assert all((tmp_path / f).stat().st_size > 0 for f in before)
    assert "wrote power.png" in capsys.readouterr().out


def test_timelines_spread_each_span_over_its_bins():
    from sim.ledger import ServerStats
    from sim.run import SimResult

    one = np.ones(1)
    spans = ServerStats("s", "main", 100.0, 1000, 10, 2.0, 1000.0, 500.0, np.array([1.0]), np.array([2.0]),
                        np.array([1000.0]), np.array([500.0]), one.astype(np.int64) * 10, one.astype(np.int64) * 4,
                        one.astype(np.int64) * 40, np.array([0.5]))  # fmt: skip
    run = SimResult("none", pd.DataFrame(), (spans,), 4.0, 0.0)
    t = timelines(run, bins=4)
    # bins [0,1) idle, [1,3) busy at 500 W with 4 sequences and half the cache, [3,4) idle
    assert t["t_s"].tolist() == [0.5, 1.5, 2.5, 3.5]
    assert t["power_w"].tolist() == pytest.approx([100.0, 500.0, 500.0, 100.0])
    assert t["running"].tolist() == pytest.approx([0.0, 4.0, 4.0, 0.0])
    assert t["kv_used"].tolist() == pytest.approx([0.0, 0.5, 0.5, 0.0])


def test_a_folder_without_a_finished_run_gets_a_one_line_answer(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "not the folder of a finished run" in capsys.readouterr().out

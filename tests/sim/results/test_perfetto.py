"""sim.results.perfetto (python -m sim.plots FOLDER --perfetto OUT.json): one replica's requests and
counters over a window, as JSON trace events whose slices never overlap on a row."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from oracle.model import OracleRangeWarning
from sim.app import execute, prepare
from sim.plots.compare import main
from sim.results.perfetto import parse_window
from sim.run_config import app_config


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    out = tmp_path_factory.mktemp("fleet")
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose("sim", overrides=[f"output_dir={out}", "trace.max_requests=300", "progress=false", "plots=false",
                                        "tracking.enabled=false", "compare_baseline=false", "fleet.replicas=2",
                                        "trace.rate_scale=4"])  # fmt: skip
    with pytest.warns(OracleRangeWarning, match="18 of 300 requests of this run"):  # azure_chat's longest prompts
        execute(prepare(app_config(OmegaConf.to_container(cfg, resolve=True))))  # type: ignore[arg-type]
    return out


def test_the_trace_holds_the_replicas_requests_in_the_window_on_rows_that_do_not_overlap(fleet, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main([str(fleet), "--perfetto", str(out), "--replica", "1", "--window", "5:15"]) == 0
    events = json.loads(out.read_text())["traceEvents"]
    slices = pd.DataFrame([{**e, "request": e["args"]["request"]} for e in events if e["ph"] == "X"])
    records = pd.read_parquet(fleet / "requests.parquet")
    expected = records[(records["server"] == 1) & (records["arrival_s"] < 15) & (records["finish_s"] >= 5)]
    assert set(slices["request"]) == set(expected["request_id"]) and len(expected) > 10
    for _, row in slices.sort_values("ts").groupby("tid"):
        # a request's phases follow each other; two requests never share a row at the same time
        assert (row["ts"].to_numpy()[1:] >= (row["ts"] + row["dur"]).to_numpy()[:-1] - 1e-3).all()
    counters = [e for e in events if e["ph"] == "C"]
    assert {e["name"] for e in counters} >= {"power (W)", "requests queued", "output tokens/s"}
    assert all(5e6 <= e["ts"] <= 15e6 for e in counters)
    assert f"wrote {out} ({len(expected):,} requests of replica 1)" in capsys.readouterr().out


def test_a_replica_the_run_lacks_gets_one_line(fleet, tmp_path, capsys):
    assert main([str(fleet), "--perfetto", str(tmp_path / "t.json"), "--replica", "2"]) == 1
    assert "trace not written: --replica 2: not a replica of this run (replicas 0–1)" in capsys.readouterr().out
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("text", ["10", "20:10", "a:b", "-1:5"])
def test_a_window_that_is_not_start_end_is_refused(text):
    with pytest.raises(ValueError, match="--window must be START:END"):
        parse_window(text)


def test_an_open_window_runs_to_the_end():
    assert parse_window("30:") == (30.0, float("inf"))

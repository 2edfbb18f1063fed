"""End to end without Hydra's runner: files, MLflow, paired runs, reproducibility."""

from __future__ import annotations

import dataclasses
import json
import logging

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sim.app import execute, prepare
from sim.results.summary import WALL_CLOCK, RunSummary
from sim.run_config import app_config
from sim.schema import ConfigError

RUN_KEYS = set(RunSummary.__dataclass_fields__) - set(WALL_CLOCK)  # summary.json's; the wall clock is in run.json
REQUIRED = RUN_KEYS | {"baseline", "energy_savings_pct", "gpus", "fleet"}


def config(tmp_path, *overrides):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(
            "sim", overrides=[f"output_dir={tmp_path / 'out'}", "trace.max_requests=400", "progress=false", *overrides]
        )
    return app_config(OmegaConf.to_container(cfg, resolve=True))


def test_a_run_writes_summary_records_plots_and_tracks(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    summary = execute(
        prepare(config(tmp_path, "policy=adaptive_gen", "policy.factor=0.3", f"tracking.uri={uri}"))
    ).to_dict()
    out = tmp_path / "out"
    on_disk = json.loads((out / "summary.json").read_text())
    assert REQUIRED <= set(on_disk)
    assert set(on_disk["baseline"]) == RUN_KEYS
    assert on_disk["quality_cost_pct"] == pytest.approx(
        100
        * on_disk["output_tokens_cut"]
        / (on_disk["input_tokens"] + on_disk["output_tokens"] + on_disk["output_tokens_cut"])
    )
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        assert set(on_disk[key]) == {"p50", "p90", "p99", "mean"}
    assert on_disk["output_tokens_cut"] > 0 and summary["energy_savings_pct"] > 0
    policy, base = (pd.read_parquet(out / f) for f in ("requests.parquet", "requests_baseline.parquet"))
    assert policy["arrival_s"].equals(base["arrival_s"])  # paired runs share arrivals
    for plot in ("power.png", "energy_per_request.png", "cdf.png", "batch.png"):
        assert (out / plot).stat().st_size > 0

    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["sweetspot-sim"])
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["params.policy.name"] == "adaptive_gen" and row["params.server.max_batch_size"] == "256"
    assert row["metrics.energy_j"] == pytest.approx(summary["energy_j"])
    assert row["metrics.quality_cost_pct"] == pytest.approx(summary["quality_cost_pct"])
    assert row["tags.mlflow.runName"] == "adaptive_gen" and row["tags.version"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(row["run_id"])}
    assert {"summary.json", "requests.parquet", "power.png", "cdf.png", "resolved_config.yaml", "run.json"} <= artifacts
    (dataset,) = mlflow.get_run(row["run_id"]).inputs.dataset_inputs
    assert dataset.dataset.name == "azure_chat" and len(dataset.dataset.digest) == 16


def test_the_mlflow_run_has_the_runs_own_times_its_source_and_only_the_params_that_apply(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    execute(prepare(config(tmp_path, "trace.max_requests=50", "compare_baseline=false", "plots=false",
                           f"tracking.uri={uri}")))  # fmt: skip
    out = tmp_path / "out"
    record = json.loads((out / "run.json").read_text())
    assert record["start_ms"] <= record["end_ms"] and record["series"] == "timelines.parquet"
    assert "start_ms" not in (out / "summary.json").read_text()  # summary.json holds no wall clock

    import mlflow

    run = mlflow.MlflowClient(uri).get_run(record_run_id(out))
    assert (run.info.start_time, run.info.end_time) == (record["start_ms"], record["end_ms"])
    assert run.data.tags["mlflow.source.name"] == "python -m sim" and run.data.tags["mlflow.source.type"] == "LOCAL"
    params = run.data.params
    assert params["trace.name"] == "azure_chat" and params["trace.max_requests"] == "50"
    assert not {"trace.rate_per_s", "trace.lengths_from", "trace.file", "capacity.target", "execution.windows"} & set(
        params
    )  # a synthetic trace's, BurstGPT's, the capacity search's (off), the windows' (one piece)
    assert "None" not in params.values() and "trace.model" not in params
    assert params["uncertainty.samples"] == "64" and "uncertainty.windows" in params
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.metrics["bands.energy_j.high"] == summary["bands"]["energy_j"]["high"]  # the bands as metrics
    assert len(mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "timeline.power_w")) == 500


def test_a_run_without_bands_logs_none_of_their_params(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    execute(prepare(config(tmp_path, "trace.max_requests=50", "plots=false", "uncertainty.samples=0",
                           f"tracking.uri={uri}")))  # fmt: skip
    out = tmp_path / "out"
    import mlflow

    run = mlflow.MlflowClient(uri).get_run(record_run_id(out))
    assert run.data.params["uncertainty.samples"] == "0"
    assert not [k for k in run.data.params if k.startswith("uncertainty.") and k != "uncertainty.samples"]
    assert not [k for k in run.data.metrics if k.startswith("bands.")]
    assert "bands" not in json.loads((out / "summary.json").read_text()) and not (out / "bands.csv").exists()


def record_run_id(out):
    return json.loads((out / "tracking.json").read_text())["run_id"]


@pytest.mark.slow
def test_an_unreachable_server_costs_seconds_and_says_how_to_log_later(tmp_path, caplog, capsys):
    import socket
    import time

    silent = socket.socket()  # accepts connections (the backlog) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    over = ("compare_baseline=false", "plots=false", "tracking.timeout_s=1")
    for uri in ("http://127.0.0.1:9", f"http://127.0.0.1:{port}"):  # refused; silent
        caplog.clear()
        out = tmp_path / uri.rsplit(":", 1)[1]
        start = time.perf_counter()
        with caplog.at_level(logging.WARNING):
            execute(prepare(config(out, *over, f"tracking.uri={uri}")))
        assert time.perf_counter() - start < 15
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("tracking")]
        assert len(warnings) == 1 and f"MLflow tracking to '{uri}' failed" in warnings[0].getMessage()
        assert f"python -m tracking {out / 'out'}" in warnings[0].getMessage()
        assert (out / "out" / "summary.json").exists() and "results in" in capsys.readouterr().out
    silent.close()
    from tracking.folder import main as log_later

    later = f"sqlite:///{tmp_path / 'later.db'}"
    assert log_later([str(tmp_path / "9" / "out"), "--uri", later]) == 0
    import mlflow

    mlflow.set_tracking_uri(later)
    assert len(mlflow.search_runs(experiment_names=["sweetspot-sim"])) == 1


@pytest.mark.slow
def test_same_seed_same_results(tmp_path):
    over = ("trace=synthetic", "trace.num_requests=300", "policy=truncation", "tracking.enabled=false", "plots=false")
    a = execute(prepare(config(tmp_path / "a", *over))).to_dict()
    b = execute(prepare(config(tmp_path / "b", *over))).to_dict()
    c = execute(prepare(config(tmp_path / "c", *over, "seed=1"))).to_dict()
    for s in (a, b, c, a["baseline"], b["baseline"], c["baseline"]):
        s.pop("sim_wall_s"), s.pop("sim_requests_per_s")
    assert a == b and a != c


def test_a_fleet_run_reports_pools_and_the_summed_peak_power(tmp_path):
    over = ("fleet.replicas=3", "fleet.router=least_tokens", "tracking.enabled=false", "plots=false")
    summary = execute(prepare(config(tmp_path, *over, "compare_baseline=false"))).to_dict()
    pools = summary["fleet"]["pools"]
    assert summary["gpus"] == 3 and pools["main"]["replicas"] == 3
    assert sum(p["requests"] for p in pools.values()) == summary["completed"]
    alone = config(tmp_path / "one", "tracking.enabled=false", "plots=false", "compare_baseline=false")
    single = execute(prepare(alone)).to_dict()
    assert summary["facility_power_peak_kw"] > single["facility_power_peak_kw"]  # three GPUs' idle power at least
    records = pd.read_parquet(tmp_path / "out" / "requests.parquet")
    assert set(records["server"]) == {0, 1, 2}


@pytest.mark.parametrize("fleet", ["length_pools", "mixed_gpus"])
def test_shipped_fleet_configs_compose_and_run(tmp_path, fleet):
    summary = execute(prepare(config(tmp_path, f"fleet={fleet}", "tracking.enabled=false", "plots=false"))).to_dict()
    assert summary["gpus"] == (3 if fleet == "length_pools" else 4)
    assert set(summary["fleet"]["pools"]) == ({"short", "long"} if fleet == "length_pools" else {"h100", "a100"})
    assert summary["completed"] == summary["baseline"]["completed"] > 0


def test_capacity_search_lands_in_the_summary_with_the_baselines_size(tmp_path):
    over = ("capacity.enabled=true", "trace.rate_scale=20", "policy=adaptive_gen", "policy.factor=0.3")
    summary = execute(prepare(config(tmp_path, *over, "tracking.enabled=false", "plots=true"))).to_dict()
    cap = summary["capacity"]
    assert cap["met"] and cap["replicas"] == summary["gpus"] == summary["fleet"]["replicas"]
    assert cap["baseline_met"] and cap["gpus_saved"] == cap["baseline_gpus"] - cap["gpus"]
    assert [p["replicas"] for p in cap["probes"]] == sorted(p["replicas"] for p in cap["probes"])
    assert (tmp_path / "out" / "capacity.png").stat().st_size > 0


def test_bad_fleet_and_capacity_settings_name_the_key(tmp_path):
    from sim.schema import ConfigError

    with pytest.raises(ConfigError, match="fleet.router"):
        config(tmp_path, "fleet.router=random")
    with pytest.raises(ConfigError, match=r"fleet.pools\[1\].oracle"):
        prepare(config(tmp_path, "fleet=length_pools", "fleet.pools.1.oracle=no-such-oracle"))
    with pytest.raises(ConfigError, match="no pool named 'gpu'"):
        prepare(config(tmp_path, "fleet=length_pools", "capacity.enabled=true", "capacity.pool=gpu"))


def test_execution_splits_the_trace_into_windows_and_the_engine_is_chosen_by_name(tmp_path):
    single = execute(prepare(config(tmp_path / "a", "tracking.enabled=false", "plots=false"))).to_dict()
    windowed = config(tmp_path / "b", "tracking.enabled=false", "plots=false", "execution.mode=local",
                      "execution.windows=3", "execution.warmup_s=120")  # fmt: skip
    assert windowed.execution.windows == 3 and windowed.server.scheduler == "vllm"
    split = execute(prepare(windowed)).to_dict()
    assert split["completed"] == single["completed"]
    assert split["energy_j"] == pytest.approx(single["energy_j"], rel=5e-3)
    with pytest.raises(ConfigError, match="server.scheduler"):
        config(tmp_path / "c", "server.scheduler=orca")
    with pytest.raises(ConfigError, match="execution.mode"):
        config(tmp_path / "d", "execution.mode=threads")


def test_console_columns_stay_aligned_for_huge_values(tmp_path):
    from sim.console.table import table

    summary = execute(prepare(config(tmp_path, "tracking.enabled=false", "plots=false", "policy=truncation")))
    huge = dataclasses.replace(summary.run, energy_j=7.5e16, energy_per_output_token_j=4.2e11)
    lines = table(dataclasses.replace(summary, run=huge)).splitlines()
    widths = {len(line) for line in lines[:9]}
    assert len(widths) == 1, "\n".join(lines[:9])
    assert "7.5e+13" in lines[2] and "4.2e+11" in lines[3]


def test_the_printed_table_is_saved_in_the_run_folder_as_an_artifact(tmp_path, capsys):
    execute(prepare(config(tmp_path, "tracking.enabled=false", "plots=false", "policy=truncation")))
    out = tmp_path / "out"
    saved = (out / "table.txt").read_text()
    assert capsys.readouterr().out == f"{saved}results in {out}\n"  # printed whole, then where the files are
    header, rule, first = saved.splitlines()[:3]
    assert header.split() == ["truncation", "90", "%", "band", "none", "change"] and set(rule) == {"─"}
    assert first.startswith("energy (kJ)") and "\x1b" not in saved  # plain text: no colour codes in the file
    assert "table.txt" in json.loads((out / "run.json").read_text())["artifacts"]

"""tracking.report (python -m sim.report): fake runs logged to a temporary sqlite MLflow store, then compared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracking import TrackingConfig, log_run, report
from tracking.report import ReportError, comparison_table, load_runs, pareto_front

pytest.importorskip("mlflow")
pytest.importorskip("sqlalchemy")


def summary(energy_j: float, savings: float, inp: int, out: int, dropped: int, cut: int) -> dict:
    lat = {"p50": 0.5, "p90": 0.8, "p99": 1.0, "mean": 0.6}
    return {
        "policy": "x",
        "energy_j": energy_j,
        "energy_savings_pct": savings,
        "output_tokens_per_j": out / energy_j,
        "input_tokens": inp,
        "output_tokens": out,
        "input_tokens_dropped": dropped,
        "output_tokens_cut": cut,
        "requests_shaped": int(dropped + cut > 0),
        "quality_cost_pct": 100.0 * (dropped + cut) / (inp + out + dropped + cut),
        "slo_attainment": 1.0,
        "ttft_s": lat,
        "tpot_s": lat,
        "e2e_s": lat,
        "baseline": {"energy_j": 1000.0},
        "gpus": 4,
        "annual_energy_mwh": energy_j / 100.0,
        "capacity": {"replicas": 3, "probes": [{"replicas": 3}]},
    }


RUNS = {
    # policy: (energy J, savings %, input served, output served, input dropped, output cut)
    "none": (1000.0, 0.0, 800, 200, 0, 0),
    "truncation": (800.0, 20.0, 600, 200, 200, 0),  # quality cost 200 / 1000 = 20 %
    "adaptive_gen": (900.0, 10.0, 800, 150, 0, 50),  # 50 / 1000 = 5 %
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)  # MLflow's default artifact root is ./mlruns
        for policy, values in RUNS.items():
            cfg = TrackingConfig(uri=uri, experiment="exp", run_name=policy)
            params = {"policy": {"name": policy}, "trace": {"name": "azure_chat", "rate_scale": 1.0},
                      "fleet": {"router": "least_tokens"}}  # fmt: skip
            assert log_run(cfg, params, summary(*values), tags={"sweep": "multirun/a"}) is not None
        for rate in (2.0, 4.0):  # another load, another sweep: never on the same front
            cfg = TrackingConfig(uri=uri, experiment="exp", run_name=f"truncation rate_scale={rate}")
            params = {"policy": {"name": "truncation"}, "trace": {"name": "azure_chat", "rate_scale": rate}}
            assert log_run(cfg, params, summary(700.0, 30.0, 600, 200, 200, 0), tags={"sweep": "multirun/b"})
    return uri


def test_runs_of_other_loads_form_their_own_groups_and_fronts(store: str) -> None:
    table = comparison_table(load_runs(store, "exp"))
    assert sorted(table["group"].unique()) == ["azure_chat, rate ×1", "azure_chat, rate ×2", "azure_chat, rate ×4"]
    front = report.fronts(table)["azure_chat, rate ×1"]
    assert front["label"].tolist() == ["none", "adaptive_gen", "truncation"]
    assert len(comparison_table(load_runs(store, "exp", sweep="multirun/b"))) == 2


def test_a_run_without_a_required_metric_is_refused_by_name() -> None:
    runs = pd.DataFrame({"run_id": ["a1b2c3d4e5"], "metrics.energy_j": [1.0]})
    with pytest.raises(ReportError, match="lack the metric 'output_tokens_per_j'"):
        comparison_table(runs)


def test_table_rows_and_quality_cost(store: str) -> None:
    table = comparison_table(load_runs(store, "exp", sweep="multirun/a")).set_index("policy")
    assert sorted(table.index) == ["adaptive_gen", "none", "truncation"]
    assert table["quality_cost_pct"].to_dict() == pytest.approx({"adaptive_gen": 5.0, "none": 0.0, "truncation": 20.0})
    assert table.loc["truncation", "energy_savings_pct"] == 20.0
    assert table.loc["adaptive_gen", "ttft_s.p99"] == 1.0
    assert (table["trace"] == "azure_chat").all() and table["label"].tolist() == list(table.index)
    assert (table["router"] == "least_tokens").all() and (table["gpus"] == 4).all()
    assert (table["capacity.replicas"] == 3).all() and table.loc["none", "annual_energy_mwh"] == 10.0
    assert table["annual_co2e_t"].isna().all()  # not logged: left empty


def test_cli_writes_markdown_csv_and_plots(store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "rep"
    assert (
        report.main(["--tracking-uri", store, "--experiment", "exp", "--out", str(out), "--sweep", "multirun/a"]) == 0
    )
    names = {"comparison.md", "comparison.csv", "pareto.png", "pareto.md", "savings.png", "latency.png",
             "tokens_per_j.png"}  # fmt: skip
    assert names <= {p.name for p in out.iterdir()}
    assert all((out / n).stat().st_size > 0 for n in names)
    csv = pd.read_csv(out / "comparison.csv")
    assert set(csv["policy"]) == set(RUNS) and "quality_cost_pct" in csv.columns
    md = (out / "comparison.md").read_text()
    assert "| truncation |" in md and "energy_savings_pct" in md
    assert "3 runs compared in 1 group(s)" in capsys.readouterr().out
    assert "| truncation | 20 | 20 |" in (out / "pareto.md").read_text()


def test_missing_experiment_and_empty_experiment(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert report.main(["--tracking-uri", store, "--experiment", "nope"]) == 1
    assert "no experiment 'nope'" in capsys.readouterr().out
    import mlflow

    mlflow.set_tracking_uri(store)
    mlflow.create_experiment("empty")
    with pytest.raises(ReportError, match="'empty' .* has no runs"):
        load_runs(store, "empty")
    with pytest.raises(ReportError, match="no runs matching"):
        load_runs(store, "exp", "params.policy.name = 'nothing'")
    assert len(load_runs(store, "exp", "params.policy.name = 'truncation'", sweep="multirun/a")) == 1


def test_labels_are_run_names_made_unique_by_run_id() -> None:
    runs = pd.DataFrame(
        {
            "run_id": ["a1b2c3d4e5", "f6g7h8i9j0", "k1l2m3n4o5"],
            "tags.mlflow.runName": ["truncation max_input_tokens=512", "same", "same"],
            "params.policy.name": ["truncation", "truncation", "none"],
            **{f"metrics.{k}": [1.0, 2.0, 3.0] for k in report.REQUIRED},
        }
    )
    table = comparison_table(runs)
    assert sorted(table["label"]) == ["same (f6g7h8i9)", "same (k1l2m3n4)", "truncation max_input_tokens=512"]
    assert table["trace"].eq("?").all() and table["energy_savings_pct"].isna().all()


def test_pareto_front_keeps_non_dominated_points() -> None:
    cost = np.array([0.0, 5.0, 20.0, 10.0, 5.0])
    saved = np.array([0.0, 10.0, 15.0, 8.0, 4.0])
    assert pareto_front(cost, saved).tolist() == [0, 1, 2]  # (10, 8) and (5, 4) are dominated by (5, 10)


# --- the sweep configs behind a comparison: experiment file and cluster launchers -------------

POLICIES = ["none", "truncation", "summarization", "adaptive_gen"]


def _stub_launcher(name: str, target: str, fields: dict) -> None:
    """Stand in for an uninstalled launcher plugin's ConfigStore entry (its schema's fields)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(
        group="hydra/launcher", name=name, node={"_target_": target, **fields}, provider="test-stub"
    )


@pytest.fixture(scope="module")
def launchers() -> None:
    """The submitit and Ray launcher plugins' configs, or stubs with their fields when not installed."""
    try:
        import hydra_plugins.hydra_submitit_launcher.config  # noqa: F401
    except ImportError:
        _stub_launcher(
            "submitit_slurm",
            "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
            {
                k: None
                for k in (
                    "submitit_folder",
                    "timeout_min",
                    "cpus_per_task",
                    "gpus_per_node",
                    "tasks_per_node",
                    "mem_gb",
                    "nodes",
                    "name",
                    "partition",
                    "account",
                    "array_parallelism",
                )
            },
        )
    try:
        import hydra_plugins.hydra_ray_launcher.config  # noqa: F401
    except ImportError:
        _stub_launcher(
            "ray",
            "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
            {"ray": {"init": {"address": None}, "remote": {}}},
        )


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose("sim", overrides=overrides, return_hydra_config=True)


def test_policy_sweep_experiment_composes_to_a_joblib_multirun() -> None:
    from importlib import resources

    cfg = _compose(["+experiment=policy_sweep"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 4
    swept = cfg.hydra.sweeper.params.policy.split(",")
    assert swept == POLICIES
    shipped = {p.name for p in resources.files("conf").joinpath("policy").iterdir()}
    assert {f"{p}.yaml" for p in swept} <= shipped


@pytest.mark.parametrize(
    ("launcher", "target", "expect"),
    [
        ("slurm", "SlurmLauncher", {"gpus_per_node": None, "cpus_per_task": 2, "timeout_min": 120}),
        ("slurm_h100", "SlurmLauncher", {"gpus_per_node": 1, "cpus_per_task": 16, "array_parallelism": 8}),
        ("ray_cluster", "RayLauncher", {}),
    ],
)
def test_cluster_launchers_compose(launchers: None, launcher: str, target: str, expect: dict) -> None:
    cfg = _compose([f"hydra/launcher={launcher}", "policy=truncation"])
    got = cfg.hydra.launcher
    assert got._target_.endswith(target)
    assert {k: got[k] for k in expect} == expect
    if launcher == "ray_cluster":
        assert got.ray.init.address == "auto"


def test_router_sweep_experiment_composes_and_every_router_is_valid() -> None:
    from sim.serving.fleet_config import FleetConfig
    from sim.serving.routers import ROUTERS

    cfg = _compose(["+experiment=router_sweep"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.fleet.replicas == 6
    swept = cfg.hydra.sweeper.params["fleet.router"].split(",")
    assert set(swept) <= set(ROUTERS)
    for router in swept:
        FleetConfig.from_mapping({"replicas": cfg.fleet.replicas, "router": router})


def test_the_console_table_shows_a_saving_s_band_low_end_and_n_a_for_runs_without_bands():
    from tracking.report import CONSOLE, console_table

    rows = pd.DataFrame({"label": ["a", "b"], "group": ["g", "g"], **{key: [1.0, 2.0] for _, key, _ in CONSOLE}})
    rows.loc[1, "bands.energy_savings_pct.low"] = float("nan")  # a run logged without bands
    rows.loc[0, "bands.energy_savings_pct.low"] = 0.25
    lines = console_table(rows).splitlines()
    assert "saved, band low (%)" in lines[1]
    assert lines[3].split()[:4] == ["a", "0.001", "1", "0.25"]
    assert lines[4].split()[:4] == ["b", "0.002", "2", "2"]  # no band: the column is blank, quality cost follows

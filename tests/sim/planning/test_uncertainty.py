"""Bands on a run's headline figures: zero width when nothing is unknown, the same under a seed,
savings whose band spans zero called so, and where users see them."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import traces
from oracle.build import oracle_for
from oracle.errors import COLUMNS, HeldOutErrors, corrected_level, load_held_out
from sim.__main__ import job_cores
from sim.app import RunContext, execute, prepare
from sim.config import ServerConfig, SloConfig
from sim.planning.band_replays import in_order, replay_bands, replay_figures
from sim.planning.uncertainty import UncertaintyConfig, available_cores, bands, calibration_errors, fewest_models
from sim.policies.adaptive_gen import AdaptiveGen, Config
from sim.policies.base import Policy
from sim.results.metrics import run_summary
from sim.results.summary import METRICS, unit
from sim.run_config import app_config
from sim.schema import ConfigError
from sim.serving.fleet import Fleet
from sim.serving.run import simulate_fleet


@pytest.fixture(scope="module")
def chat():
    return traces.load_config(traces.TraceConfig(name="azure_chat", max_requests=300))


def exact(label: str = "H100_refined", models: int = 3) -> dict[str, HeldOutErrors]:
    """Held-out errors of a calibration that predicted every run of `models` models exactly."""
    rows = pd.DataFrame([[label, f"m{m}", f"m{m}|0", "chat", 1.0, 1.0] for m in range(models)], columns=COLUMNS)
    return {label: HeldOutErrors(label, rows)}


def test_bands_have_zero_width_when_the_constants_are_known_exactly(chat, llama):
    fleet = Fleet.single(llama, ServerConfig())
    cfg = UncertaintyConfig(samples=10, sources="calibration")
    samples = replay_bands(chat, fleet, cfg, 0, replay_figures(Policy(), SloConfig()), errors=exact())
    point = run_summary(simulate_fleet(chat, fleet), SloConfig())
    out = bands(samples, cfg, exact())
    for name, value in (("energy_j", point.energy_j), ("ttft_p99_s", point.ttft_s.p99)):
        assert out[name]["low"] == out[name]["high"] == pytest.approx(value, rel=1e-12)


def test_calibration_errors_widen_the_energy_band_by_their_spread(chat):
    """With the H100 family's constants (what a model nobody measured gets), the bands draw from
    the leave-one-model-out errors, and the energy follows the drawn energy ratio."""
    fleet = Fleet.single(oracle_for("llama-3.1-8b", "h100", family=True), ServerConfig())
    cfg = UncertaintyConfig(samples=40, sources="calibration")
    errors = calibration_errors(fleet)
    describe = errors["H100"].describe()
    samples = replay_bands(chat, fleet, cfg, 0, replay_figures(Policy(), SloConfig()))
    assert "leave-one-model-out errors" in describe and "H100" in describe
    point = run_summary(simulate_fleet(chat, fleet), SloConfig()).energy_j
    ratio = samples["energy_j"] / point
    # the steps' energy scales with the drawn energy ratio; idle energy (a fifth here) does not
    assert np.corrcoef(ratio, samples["H100_energy_ratio"])[0, 1] > 0.8
    assert fewest_models(errors) == 16  # H100's calibrated models: the band spans 0.9·17/16 of the replays
    out = bands(samples, cfg, errors)
    assert out["calibration"] == describe
    assert out["spanned"] == pytest.approx(0.9 * 17 / 16) and out["energy_j"]["high"] > 1.1 * point


def test_a_refined_oracle_draws_from_its_gpus_refined_configurations(chat, llama):
    """Llama-3.1-8B on one H100 was measured, so its shipped oracle is refined: its bands draw
    each run left out of its own configuration, a narrower band than a model nobody measured gets."""
    refined = Fleet.single(llama, ServerConfig())
    errors = calibration_errors(refined)
    assert list(errors) == ["H100_refined"] and "leave-one-run-out errors" in errors["H100_refined"].describe()
    cfg = UncertaintyConfig(samples=60, sources="calibration")
    family = Fleet.single(oracle_for("llama-3.1-8b", "h100", family=True), ServerConfig())
    width = {}
    for name, fleet in (("refined", refined), ("family", family)):
        errs = calibration_errors(fleet)
        out = bands(replay_bands(chat, fleet, cfg, 0, replay_figures(Policy(), SloConfig())), cfg, errs)
        width[name] = out["energy_j"]["high"] / out["energy_j"]["low"]
    assert 1.0 < width["refined"] < width["family"]


def test_the_same_seed_gives_the_same_bands_and_another_seed_others(chat, llama):
    fleet = Fleet.single(llama, ServerConfig())
    cfg = UncertaintyConfig(samples=10)
    replay = replay_figures(Policy(), SloConfig())
    a, b = (replay_bands(chat, fleet, cfg, 3, replay, progress=False) for _ in range(2))
    pd.testing.assert_frame_equal(a, b)
    c = replay_bands(chat, fleet, cfg, 4, replay, progress=False)
    assert not np.allclose(a["energy_j"], c["energy_j"])


def test_the_bands_do_not_depend_on_the_threads_the_replays_run_on(chat, llama):
    """Replays on one thread and on three (each a fleet of two replicas behind least tokens, with
    the baseline) give the same figures, in the same order."""
    fleet = Fleet.single(llama, ServerConfig(), 2, "least_tokens")
    replay = replay_figures(AdaptiveGen(llama, Config(factor=0.3)), SloConfig())
    one, three = (
        replay_bands(chat, fleet, UncertaintyConfig(samples=12, threads=t), 5, replay, progress=False) for t in (1, 3)
    )
    pd.testing.assert_frame_equal(one, three)
    assert one["energy_savings_pct"].nunique() > 1


def test_in_order_keeps_the_order_and_at_most_twice_the_workers_under_way():
    running, most, lock = [0], [0], threading.Lock()

    def slow(i: int, wait: float) -> dict[str, float]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(wait)
        with lock:
            running[0] -= 1
        return {"i": i}

    submitted = []

    def args():
        for i in range(12):
            submitted.append(i)
            yield i, 0.02 * ((7 * i) % 5)  # later ones often finish first

    out = []
    for row in in_order(slow, args(), workers=2):
        out.append(row["i"])
        assert len(submitted) - len(out) <= 3  # no more than 2 × 2 drawn ahead of what was handed out
    assert out == list(range(12)) and most[0] == 2


def test_in_order_raises_a_replay_s_error():
    def failing(i: int) -> dict[str, float]:
        if i == 3:
            raise ValueError("replay 3 failed")
        return {"i": i}

    with pytest.raises(ValueError, match="replay 3 failed"):
        list(in_order(failing, ((i,) for i in range(8)), workers=2))


def test_a_saving_whose_band_spans_zero_is_not_significant():
    cfg = UncertaintyConfig(samples=20)
    across = pd.DataFrame({"energy_savings_pct": np.linspace(-1.0, 3.0, 20)})
    above = pd.DataFrame({"energy_savings_pct": np.linspace(0.5, 3.0, 20)})
    assert bands(across, cfg)["energy_savings_pct"]["significant"] is False
    assert bands(above, cfg)["energy_savings_pct"]["significant"] is True


def test_the_band_is_the_central_share_of_the_replays():
    cfg = UncertaintyConfig(samples=100, level=0.9)
    out = bands(pd.DataFrame({"energy_j": np.arange(1.0, 101.0)}), cfg)["energy_j"]
    assert (out["low"], out["median"], out["high"]) == (5.0, 50.0, 95.0)
    wider = bands(pd.DataFrame({"energy_j": np.arange(1.0, 101.0)}), cfg, exact(models=9))  # 0.9 · 10/9 = 1
    assert (wider["energy_j"]["low"], wider["energy_j"]["high"]) == (1.0, 100.0)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("samples", 5, "0 or at least 10"),
        ("samples", -1, "≥ 0"),
        ("level", 1.0, r"\(0, 1\)"),
        ("sources", "trace", "must be one of"),
        ("windows", 0, "≥ 1"),
        ("threads", -1, "≥ 0"),
    ],
)
def test_bad_uncertainty_settings_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=f"uncertainty.{key}.*{message}"):
        UncertaintyConfig(**{key: value})


def run_config(tmp_path, *overrides):
    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose("sim", overrides=[f"output_dir={tmp_path / 'out'}", "trace.max_requests=300", "progress=false",
                                        "tracking.enabled=false", "plots=false", *overrides])  # fmt: skip
    return app_config(OmegaConf.to_container(cfg, resolve=True))


def test_a_sweep_job_s_share_of_the_cores_sets_the_bands_threads_unless_given(tmp_path, monkeypatch):
    seen = []

    def replays(requests, fleet, cfg, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(cfg.threads)
        return replay_bands(requests, fleet, cfg, *args, **kwargs)

    monkeypatch.setattr("sim.app.replay_bands", replays)
    for folder, threads in (("a", 0), ("b", 3)):
        cfg = run_config(tmp_path / folder, "uncertainty.samples=10", f"uncertainty.threads={threads}")
        execute(prepare(cfg), RunContext(cores=1))
    execute(prepare(run_config(tmp_path / "c", "uncertainty.samples=10")))
    assert seen == [1, 3, 0]


@pytest.mark.parametrize(
    ("launcher", "cores"),
    [
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": -1}, 1),
        ({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 1}, "all"),
        (
            {
                "_target_": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
                "ray": {"remote": {"num_cpus": 2}},
            },
            2,
        ),
        ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, None),
        ({"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"}, None),
    ],
)
def test_a_sweep_job_gets_this_machine_s_cores_over_the_jobs_run_side_by_side(launcher, cores):
    expected = available_cores() if cores == "all" else cores
    assert job_cores(OmegaConf.create(launcher)) == expected


def test_a_run_reports_its_bands_in_the_summary_the_table_and_a_file(tmp_path, capsys):
    cfg = run_config(tmp_path, "policy=truncation", "uncertainty.samples=12", "capacity.enabled=true",
                     "trace.rate_scale=20", "fleet.router=least_tokens")  # fmt: skip
    summary = execute(prepare(cfg))
    out = tmp_path / "out"
    data = json.loads((out / "summary.json").read_text())
    b = data["bands"]
    assert b["samples"] == 12 and b["level"] == 0.9 and b["sources"] == "calibration+workload"
    for name in ("energy_j", "ttft_p99_s", "energy_savings_pct", "capacity_replicas", "capacity_gpus"):
        assert b[name]["low"] <= b[name]["median"] <= b[name]["high"], name
    assert isinstance(b["energy_savings_pct"]["significant"], bool)
    assert summary.value("bands.energy_j.low") == b["energy_j"]["low"]
    samples = pd.read_csv(out / "bands.csv")
    assert len(samples) == 12 and {"H100_refined_time_ratio", "H100_refined_energy_ratio", "requests"} <= set(
        samples.columns
    )
    text = capsys.readouterr().out
    configurations = load_held_out().query("gpu == 'H100_refined'")["model"].nunique()  # 15 refined on H100
    central = 100 * corrected_level(0.9, configurations)
    assert "90 % band" in text and f"bands: 90 % bands from 12 replays (the central {central:.3g} % of them" in text
    # the default llama-3.1-8b_h100 is refined on its measured runs: its bands say what they draw from
    assert b["refined"] and "for caps and tasks not measured" in text and "refined without it" in text
    assert f"{data['capacity']['replicas']} replicas (90 % band" in text


def test_a_sweep_can_tune_for_a_band_s_end(tmp_path):
    cfg = run_config(tmp_path, "policy=truncation", "uncertainty.samples=10", "objective=bands.energy_savings_pct.low")
    summary = execute(prepare(cfg))
    from sim.run_config import objective

    low = objective(summary, cfg.objective)
    assert isinstance(low, float) and np.isfinite(low) and low == summary.bands["energy_savings_pct"]["low"]


def test_a_workload_band_needs_no_calibration_but_a_calibration_band_does(tmp_path, llama):
    table = tmp_path / "other.json"
    llama.save(table)
    raw = json.loads(table.read_text())
    raw["gpu"] = "Some GPU 48GB"
    table.write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="Some GPU 48GB.*uncertainty.sources=workload"):
        prepare(run_config(tmp_path, f"oracle={table}"))
    prepare(run_config(tmp_path, f"oracle={table}", "uncertainty.sources=workload"))


def test_every_band_key_has_the_unit_of_its_figure():
    assert unit("bands.energy_j.high") == "J" and unit("bands.ttft_p99_s.low") == "s"
    assert unit("bands.capacity_gpus.median") == "GPUs"
    assert {"bands.level", "bands.samples", "bands.energy_savings_pct.significant"} <= set(METRICS)


def test_a_level_too_high_for_the_replays_says_how_many_it_needs():
    assert UncertaintyConfig(samples=32, level=0.9).thin_tails() is None
    message = UncertaintyConfig(samples=32, level=0.99).thin_tails()
    assert message is not None and "at least 200" in message
    assert UncertaintyConfig(samples=0, level=0.99).thin_tails() is None
    assert UncertaintyConfig(samples=64).thin_tails(models=14) is None  # the default: 2 replays a tail
    assert "at least 57" in (UncertaintyConfig(samples=32).thin_tails(models=14) or "")


def test_replays_whose_capacity_hits_the_ceiling_are_counted_once_not_logged_per_probe(tmp_path, caplog):
    cfg = run_config(tmp_path, "uncertainty.samples=10", "capacity.enabled=true", "capacity.max_replicas=1",
                     "trace.rate_scale=20", "trace.max_requests=1000")  # fmt: skip
    with caplog.at_level("INFO"):
        execute(prepare(cfg))
    probes = [r for r in caplog.records if r.getMessage().startswith("capacity probe")]
    assert len(probes) == 1  # the point search's; the replays' probes are debug lines
    counted = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bands:")]
    assert len(counted) == 1 and "of 10 replays met the capacity target at no size" in counted[0]
    assert not pd.read_csv(tmp_path / "out" / "bands.csv")["capacity_met"].all()


def test_the_bands_plot_is_drawn_with_the_run_and_again_from_its_folder(tmp_path):
    from sim.plots.compare import plot_folder

    cfg = run_config(tmp_path, "policy=truncation", "uncertainty.samples=10", "plots=true", "background=false")
    execute(prepare(cfg))
    out = tmp_path / "out"
    first = (out / "bands.png").stat().st_mtime_ns
    assert "bands.png" in plot_folder(out) and (out / "bands.png").stat().st_mtime_ns >= first
    (out / "bands.csv").unlink()
    assert "bands.png" not in plot_folder(out)  # no replays to draw: no bands plot, and no error


def test_a_local_bootstrap_keeps_the_peak_a_plain_one_loses():
    """On replicas of Llama-3.1-8B / H100 with the H100 family's constants (the replica count is
    chosen for its speed; the bootstrap, not the calibration, is what this checks). The draws are
    judged against the trace's own p99 TTFT, so that a recalibration moving the fleet nearer to or
    further from overload does not flip them."""
    from traces.bootstrap import resample_windows

    busy = traces.load_config(traces.TraceConfig(name="azure_chat", rate_scale=20.0))
    fleet = Fleet.single(oracle_for("llama-3.1-8b", "h100", family=True), ServerConfig(), 7, "round_robin")

    def p99(requests):
        return run_summary(simulate_fleet(requests, fleet), SloConfig()).ttft_s.p99

    peak = p99(busy)
    assert peak > 1.0  # the trace's mid-hour peak overloads 7 replicas
    plain = [p99(resample_windows(busy, 20, np.random.default_rng(s), reach=20)) for s in range(8)]
    local = [p99(resample_windows(busy, 20, np.random.default_rng(s), reach=1)) for s in range(8)]
    assert max(plain) < peak / 2  # scattered peaks: every plain draw is much lighter than the trace
    assert sum(t > peak / 2 for t in local) >= 3  # the peak kept: local draws overload as the trace does
    assert np.median(local) > max(plain)  # and the typical local draw is busier than any plain one

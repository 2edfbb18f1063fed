"""Plots come from the run's folder alone: its timelines match the span logs, and
`python -m sim.plots` draws them again from a finished run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from sim.app import execute, prepare
from sim.config import SloConfig
from sim.plots import compare as plots
from sim.plots import energy as plots_energy
from sim.plots import load as plots_load
from sim.plots.compare import PLOT_FILES, main
from sim.plots.energy import ENERGY_PLOT, SEGMENTS
from sim.plots.figure import PlotRun
from sim.plots.load import CLOCK_PLOT, LOAD_PLOT, REPLICAS_PLOT
from sim.results.summary import SAME_RUN
from sim.results.timelines import REPLICAS_FILE, TIMELINES_FILE, timelines
from sim.run_config import app_config


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
        "tokens_per_s",
        "clock_mhz",
        "queued",
        "run",
    ]
    own = lines[lines["run"] == 0]
    width = float(own["t_s"].iloc[1] - own["t_s"].iloc[0])
    # the power timeline integrates to the run's energy, idle power included, over the common horizon
    assert float(own["power_w"].sum()) * width == pytest.approx(summary.run.energy_j, rel=1e-6)
    assert ((own["kv_used"] >= 0) & (own["kv_used"] <= 1)).all() and own["running"].max() > 1
    # throughput integrates to the output tokens served (the server's span counts run ~0.1 % above
    # the records' here); the queue to the requests' total wait
    records = pd.read_parquet(tmp_path / "requests.parquet")
    assert float(own["tokens_per_s"].sum()) * width == pytest.approx(records["n_out_served"].sum(), rel=5e-3)
    assert float(own["queued"].sum()) * width == pytest.approx(records["wait_s"].sum(), rel=1e-6)
    before = {f: (tmp_path / f).stat().st_mtime_ns for f in PLOT_FILES}
    for f in PLOT_FILES:
        (tmp_path / f).unlink()
    assert main([str(tmp_path)]) == 0
    assert all((tmp_path / f).stat().st_size > 0 for f in before)
    assert "wrote power.png" in capsys.readouterr().out


def test_timelines_spread_each_span_over_its_bins():
    from sim.engine.ledger import ServerStats
    from sim.serving.run import SimResult

    one = np.ones(1)
    spans = ServerStats("s", "main", 100.0, 1000, 10, 2.0, 1000.0, 500.0, np.array([1.0]), np.array([2.0]),
                        np.array([1000.0]), np.array([500.0]), one.astype(np.int64) * 10, one.astype(np.int64) * 4,
                        one.astype(np.int64) * 40, np.array([0.5]))  # fmt: skip
    # two requests wait over overlapping times: [0, 2) and [0.5, 3); a rejected one never started
    records = pd.DataFrame({"arrival_s": [0.0, 0.5, 1.0], "start_s": [2.0, 3.0, np.nan], "server": [0, 0, -1]})
    run = SimResult("none", records, (spans,), 4.0, 0.0)
    t = timelines(run, bins=4)
    # bins [0,1) idle, [1,3) busy at 500 W with 4 sequences and half the cache, [3,4) idle
    assert t["t_s"].tolist() == [0.5, 1.5, 2.5, 3.5]
    assert t["power_w"].tolist() == pytest.approx([100.0, 500.0, 500.0, 100.0])
    assert t["running"].tolist() == pytest.approx([0.0, 4.0, 4.0, 0.0])
    assert t["kv_used"].tolist() == pytest.approx([0.0, 0.5, 0.5, 0.0])
    assert t["tokens_per_s"].tolist() == pytest.approx([0.0, 20.0, 20.0, 0.0])
    assert t["queued"].tolist() == pytest.approx([1.5, 2.0, 1.0, 0.0])


def test_a_folder_without_a_finished_run_gets_a_one_line_answer(tmp_path, capsys):
    assert main([str(tmp_path)]) == 1
    assert "not the folder of a finished run" in capsys.readouterr().out


def test_a_fleet_run_draws_queue_throughput_and_each_replica(tmp_path):
    _run(tmp_path, "fleet.replicas=2", "trace.rate_scale=4", "compare_baseline=false")
    fleet = pd.read_parquet(tmp_path / TIMELINES_FILE)
    each = pd.read_parquet(tmp_path / REPLICAS_FILE)
    assert sorted(set(each["replica"])) == [0, 1] and set(each["name"]) == {"main-0", "main-1"}
    # the replicas' lines add up to the fleet's: power and throughput summed, queue split by server
    summed = each.groupby("t_s")[["power_w", "tokens_per_s", "queued"]].sum()
    for col in ("power_w", "tokens_per_s", "queued"):
        assert summed[col].to_numpy() == pytest.approx(fleet[col].to_numpy(), rel=1e-9, abs=1e-9)
    assert all((tmp_path / f).stat().st_size > 0 for f in (LOAD_PLOT, REPLICAS_PLOT))


def test_a_single_server_run_writes_no_replica_view(tmp_path):
    _run(tmp_path, "compare_baseline=false")
    assert (tmp_path / LOAD_PLOT).stat().st_size > 0
    assert not (tmp_path / REPLICAS_FILE).exists() and not (tmp_path / REPLICAS_PLOT).exists()
    assert not (tmp_path / ENERGY_PLOT).exists()  # azure_chat has no prefix blocks: no hits


def test_a_run_with_prefix_cache_hits_draws_its_energy_breakdown(tmp_path, capsys):
    summary = _run(tmp_path, "trace=mooncake_conversation", "policy=truncation")
    assert summary.run.cached_tokens > 0 and (tmp_path / ENERGY_PLOT).stat().st_size > 0
    assert "prefix cache: truncation" in capsys.readouterr().out
    (tmp_path / ENERGY_PLOT).unlink()
    assert main([str(tmp_path)]) == 0 and (tmp_path / ENERGY_PLOT).exists()  # drawn again from the folder


def test_the_energy_breakdown_stacks_prefill_the_rest_idle_and_the_spared_prefill(tmp_path, monkeypatch):
    figures = _drawn(monkeypatch, plots_energy)
    run = {"policy": "truncation", "active_energy_j": 3000.0, "prefill_energy_j": 1000.0, "idle_energy_j": 1000.0,
           "cache_saved_j": 500.0, "cached_tokens": 10, "prefix_hit_rate": 0.25}  # fmt: skip
    base = {**run, "policy": "none", "active_energy_j": 5000.0, "cache_saved_j": 0.0, "prefix_hit_rate": 0.0}
    plots_energy.plot_energy_breakdown({**run, "baseline": base, "baseline_source": "simulated"}, tmp_path / "e.png")
    ax = figures[0].axes[0]
    bars = [(p.get_x(), p.get_y(), p.get_height(), p.get_hatch()) for p in ax.patches]
    policy, baseline = ([b for b in bars if b[0] < 0.5], [b for b in bars if b[0] > 0.5])
    assert [b[1:] for b in policy] == [(0.0, 1.0, None), (1.0, 2.0, None), (3.0, 1.0, None), (4.0, 0.5, "///")]  # kJ
    assert [b[1:] for b in baseline] == [(0.0, 1.0, None), (1.0, 4.0, None), (5.0, 1.0, None), (6.0, 0.0, "///")]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [label for _, label, _ in SEGMENTS] and legend[-1] == "spared by the prefix cache (not spent)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["truncation", "none (baseline)"]
    plots_energy.plot_energy_breakdown({**run, "baseline": run, "baseline_source": SAME_RUN}, tmp_path / "e.png")
    assert len(figures[1].axes[0].patches) == len(SEGMENTS)  # a run that is its own baseline: one bar


def _drawn(monkeypatch, module) -> list:
    """The figures `module`'s plot functions draw, kept instead of saved."""
    figures: list = []
    monkeypatch.setattr(module, "save", lambda fig, path: figures.append(fig) or path)
    return figures


def test_capacity_probes_that_meet_and_miss_the_slo_differ_in_colour(tmp_path, monkeypatch):
    figures = _drawn(monkeypatch, plots_load)
    probe = {"gpus": 1, "attainment": 1.0, "rejected": 0}
    probes = [{**probe, "replicas": n, "ttft_s": 5.0 / n, "tpot_s": 0.05, "energy_j": 1e5 * n, "met": n > 2}
              for n in (1, 2, 3, 4)]  # fmt: skip
    capacity = {"pool": "main", "target": "p99", "replicas": 3, "probes": probes}
    plots_load.plot_capacity(capacity, SloConfig(ttft_s=1.0, tpot_s=0.1), tmp_path / "c.png")
    energy = figures[0].axes[1]
    met, missed = (c for c in energy.collections)
    assert met.get_offsets()[:, 0].tolist() == [3, 4] and missed.get_offsets()[:, 0].tolist() == [1, 2]
    assert not np.allclose(met.get_facecolor(), missed.get_facecolor())
    assert {t.get_text() for t in energy.get_legend().get_texts()} == {"meets the SLO", "misses the SLO"}


def _plot_runs() -> list[PlotRun]:
    rng = np.random.default_rng(0)
    records = pd.DataFrame({"completed": True, "ttft_s": rng.uniform(0.01, 0.3, 200),
                            "tpot_s": rng.uniform(0.006, 0.03, 200), "e2e_s": rng.uniform(0.1, 9, 200),
                            "energy_j": rng.uniform(5, 500, 200)})  # fmt: skip
    lines = pd.DataFrame({"t_s": [1.0, 2.0], "power_w": [400.0, 500.0], "running": [3.0, 4.0], "kv_used": [0.1, 0.2]})
    return [PlotRun("truncation", records, lines), PlotRun("none (baseline)", records, lines)]


def test_latency_cdfs_mark_the_slo_and_their_tick_labels_do_not_collide(tmp_path, monkeypatch):
    figures = _drawn(monkeypatch, plots)
    plots.plot_cdfs(_plot_runs(), tmp_path / "cdf.png", SloConfig(ttft_s=0.5, tpot_s=0.02))
    fig = figures[0]
    ttft, tpot = fig.axes[:2]
    for ax, target in ((ttft, 0.5), (tpot, 0.02)):
        assert [line.get_xdata()[0] for line in ax.lines if line.get_label().startswith("SLO")] == [target]
    fig.canvas.draw()
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        shown = [t for t in ax.get_xticklabels() if t.get_text() and lo <= t.get_position()[0] <= hi]
        boxes = sorted((t.get_window_extent() for t in shown), key=lambda b: b.x0)
        assert len(boxes) >= 2 and all(a.x1 < b.x0 for a, b in zip(boxes[:-1], boxes[1:], strict=True))


def test_the_policy_power_line_is_drawn_over_the_baseline(tmp_path, monkeypatch):
    figures = _drawn(monkeypatch, plots)
    plots.plot_power(_plot_runs(), tmp_path / "power.png")
    policy, baseline = figures[0].axes[0].lines
    assert policy.get_label() == "truncation" and policy.get_zorder() > baseline.get_zorder()
    assert baseline.get_alpha() < 1.0


def test_a_clock_controlled_run_logs_its_clock_over_time_and_draws_it(tmp_path, capsys):
    """The SLO controller lowers the SM clock: the timelines carry it (MHz, busy-time weighted, NaN
    while idle), the summary its busy-time mean, the console says it, and clock.png draws it."""
    summary = _run(tmp_path, "gpu.clock_policy=slo", "compare_baseline=false", "uncertainty.samples=0")
    lines = pd.read_parquet(tmp_path / TIMELINES_FILE)
    clock = lines["clock_mhz"].to_numpy()
    busy = lines["tokens_per_s"].to_numpy() > 0
    assert np.all(np.isfinite(clock[busy])) and np.isnan(clock[lines["power_w"] == lines["power_w"].min()]).any()
    assert 345 - 1e-6 <= np.nanmin(clock) < np.nanmax(clock) <= 1980 + 1e-6  # the H100's clock table (bins round)
    assert 345 < summary.run.mean_clock_mhz < 1980
    assert f"GPU clock: {summary.run.mean_clock_mhz:.0f} MHz on average over busy time" in capsys.readouterr().out
    assert (tmp_path / CLOCK_PLOT).stat().st_size > 0


def test_without_clock_settings_the_console_is_quiet_and_the_board_limit_alone_moves_the_clock(tmp_path, capsys):
    """No `gpu.*` clock setting: no clock line; the clock drops only where a step would draw more
    than the board's 700 W (long prefills), and clock.png is drawn exactly when it moved."""
    summary = _run(tmp_path, "compare_baseline=false", "uncertainty.samples=0")
    clock = pd.read_parquet(tmp_path / TIMELINES_FILE)["clock_mhz"].to_numpy()
    assert np.nanmax(clock) <= 1980 + 1e-6 and 1500 < summary.run.mean_clock_mhz <= 1980
    assert "GPU clock" not in capsys.readouterr().out
    assert (tmp_path / CLOCK_PLOT).exists() == (np.nanmax(clock) - np.nanmin(clock) > 0.5)

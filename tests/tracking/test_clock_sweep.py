"""tracking.clock_sweep: runs that differ only in their locked clock form a sweep; its sweet spots;
the report writes its section and clocks.png (fake runs logged to a temporary sqlite store)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tracking import TrackingConfig, log_run, report
from tracking.clock_sweep import clock_sweeps, describe, plot, sweet_spots

MHZ = [495.0, 690.0, 990.0, 1290.0, 1980.0]
ENERGY = [0.18, 0.21, 0.25, 0.30, 0.46]  # J per output token: falls with the clock
TPOT = [0.032, 0.015, 0.011, 0.0096, 0.0086]  # s, median
SLO = [0.66, 0.979, 0.9997, 1.0, 1.0]


def table(clock_policy: str = "static") -> pd.DataFrame:
    """comparison_table-shaped rows: one clock sweep, and a run of another load that joins none."""
    rows = [
        {"label": f"gpu.clock_mhz={f:g}", "group": "azure_chat, rate ×1", "policy": "none", "power_limit_w": "board",
         "clock_policy": clock_policy, "clock_mhz": "max" if f == 1980 else f"{f:g}", "mean_clock_mhz": f,
         "energy_per_output_token_j": e, "tpot_s.p50": t, "tpot_s.p99": 3 * t, "slo_attainment": a}
        for f, e, t, a in zip(MHZ, ENERGY, TPOT, SLO, strict=True)
    ]  # fmt: skip
    other = {**rows[0], "group": "azure_chat, rate ×2"}
    return pd.DataFrame([*rows, other])


def test_runs_that_differ_only_in_their_clock_form_one_sweep_by_clock():
    sweeps = clock_sweeps(table())
    assert list(sweeps) == ["azure_chat, rate ×1, none"]
    (sweep,) = sweeps.values()
    assert sweep["clock_mhz"].tolist() == MHZ  # the mean clock; the maximum's run placed too
    assert clock_sweeps(table("slo")) == {}  # a controller's runs are not a locked clock's


def test_the_sweet_spots_are_least_energy_energy_delay_and_least_energy_meeting_the_slo():
    (sweep,) = clock_sweeps(table()).values()
    spots = sweet_spots(sweep)
    assert spots["energy"]["clock_mhz"] == 495.0
    edp = np.array(ENERGY) * np.array(TPOT)
    assert spots["energy_delay"]["clock_mhz"] == MHZ[int(np.argmin(edp))]
    assert spots["slo"]["clock_mhz"] == 990.0  # 690 MHz loses 2.1 points of attainment
    text = describe(sweep)
    assert "against 1980 MHz" in text and "least energy meeting the SLO" in text and "990 MHz" in text


def test_the_plot_is_drawn(tmp_path: Path):
    path = plot(clock_sweeps(table()), tmp_path / "clocks.png")
    assert path.stat().st_size > 10_000


def test_the_report_finds_a_clock_sweep_among_logged_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        for f, e, t, a in zip(MHZ, ENERGY, TPOT, SLO, strict=True):
            lat = {"p50": t, "p90": 2 * t, "p99": 3 * t, "mean": t}
            summary = {"policy": "none", "energy_j": 1e5 * e, "output_tokens_per_j": 1 / e, "quality_cost_pct": 0.0,
                       "slo_attainment": a, "ttft_s": lat, "tpot_s": lat, "e2e_s": lat,
                       "energy_per_output_token_j": e, "mean_clock_mhz": f}  # fmt: skip
            params = {"policy": {"name": "none"}, "trace": {"name": "azure_chat", "rate_scale": 1.0},
                      "gpu": {"clock_mhz": None if f == 1980 else int(f), "clock_policy": "static"}}  # fmt: skip
            cfg = TrackingConfig(uri=uri, experiment="clocks", run_name=f"gpu.clock_mhz={f:g}")
            assert log_run(cfg, params, summary, tags={"sweep": "multirun/c"}) is not None
        assert report.main(["--tracking-uri", uri, "--experiment", "clocks", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "clock sweep (azure_chat, rate ×1, none): against 1980 MHz" in out
    assert "## Clock sweeps" in (tmp_path / "r" / "comparison.md").read_text()
    assert (tmp_path / "r" / "clocks.png").stat().st_size > 10_000

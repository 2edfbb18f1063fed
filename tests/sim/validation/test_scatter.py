"""The measurements' own scatter: each run against the log-log line through its sweep's neighbours."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.validation.scatter import (
    across_phases,
    neighbour_scatter,
    repeat_spread,
    scatter_against_error,
    scatter_by_phase,
    scatter_column,
)
from sim.validation.table import METRICS


def sweep(caps: list[int], throughput: list[float], *, model: str = "m", gpu: str = "H100") -> pd.DataFrame:
    """A validation table of one sweep: every metric measured as `throughput`, simulated 10 % high."""
    rows = []
    for cap, value in zip(caps, throughput, strict=True):
        row: dict[str, object] = {
            "model_id": model,
            "task": "chat",
            "gpu_model": gpu,
            "num_gpus": 1,
            "expert_parallel": 1,
            "data_parallel": 1,
            "weight_precision": "bfloat16",
            "max_num_seqs": cap,
        }
        for m in METRICS:
            row |= {f"{m}_measured": value, f"{m}_simulated": value * 1.1, f"{m}_err_pct": 10.0}
        rows.append(row)
    return pd.DataFrame(rows)


def test_a_power_law_sweep_has_no_scatter_and_its_ends_have_none_measured() -> None:
    caps = [8, 16, 32, 64, 128]
    s = neighbour_scatter(sweep(caps, [100.0 * c**0.7 for c in caps]))[scatter_column("throughput")]
    assert math.isnan(s.iloc[0]) and math.isnan(s.iloc[-1])
    assert np.allclose(s.iloc[1:-1], 0.0, atol=1e-9)


def test_one_run_off_its_neighbours_by_10_percent() -> None:
    """Equal spacing in log(cap): w = 1/2, so r = log 1.1 and one run's noise is r / sqrt(3/2); the
    runs beside it see it as a neighbour, half of it, with the opposite sign."""
    caps = [8, 16, 32, 64, 128]
    values = [100.0] * 5
    values[2] = 110.0
    s = neighbour_scatter(sweep(caps, values))[scatter_column("throughput")]
    assert s.iloc[2] == pytest.approx(math.expm1(math.log(1.1) / math.sqrt(1.5)) * 100.0)
    assert s.iloc[1] == pytest.approx(math.expm1(-0.5 * math.log(1.1) / math.sqrt(1.5)) * 100.0)
    assert s.iloc[1] == pytest.approx(s.iloc[3])


def test_uneven_caps_weight_the_nearer_neighbour() -> None:
    """Caps 8, 16, 128: 16 lies a quarter of the way from 8 to 128 in log(cap), so the line there
    weighs cap 8's log value 3/4 and cap 128's 1/4."""
    values = [100.0, 150.0, 400.0]
    s = neighbour_scatter(sweep([8, 16, 128], values))[scatter_column("power")]
    w = 1.0 / 4.0
    line = (1 - w) * math.log(100.0) + w * math.log(400.0)
    expected = math.expm1((math.log(150.0) - line) / math.sqrt(1 + w * w + (1 - w) ** 2)) * 100.0
    assert s.iloc[1] == pytest.approx(expected)


def test_repeats_at_a_cap_are_one_neighbour_and_each_is_judged() -> None:
    df = sweep([8, 16, 16, 32], [100.0, 90.0, 110.0, 100.0])
    s = neighbour_scatter(df)[scatter_column("throughput")]
    assert math.isnan(s.iloc[0]) and math.isnan(s.iloc[3])
    assert s.iloc[1] < 0.0 < s.iloc[2]
    two = sweep([8, 16, 32, 64], [100.0, 110.0, 100.0, 100.0])
    two = pd.concat([two, sweep([16], [90.0])], ignore_index=True)
    r = neighbour_scatter(two)[scatter_column("throughput")]
    shared = math.exp((math.log(110.0) + math.log(90.0)) / 2)
    expected = math.expm1((math.log(100.0) - (math.log(100.0) + math.log(shared)) / 2) / math.sqrt(1.5)) * 100.0
    assert r.iloc[2] == pytest.approx(expected)


def test_sweeps_are_kept_apart_and_short_ones_have_no_scatter() -> None:
    df = pd.concat(
        [sweep([8, 16, 32], [100.0, 200.0, 400.0]), sweep([8, 16], [1.0, 5.0], model="other")], ignore_index=True
    )
    s = neighbour_scatter(df)[scatter_column("batch")]
    assert s.iloc[1] == pytest.approx(0.0, abs=1e-9)
    assert s.iloc[3:].isna().all()


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.floats(1.0, 1e4), min_size=3, max_size=8),
    scale=st.floats(1e-3, 1e3),
    stretch=st.sampled_from([2, 3, 10]),
)
def test_scatter_ignores_the_metric_s_unit_and_the_caps_scale(values: list[float], scale: float, stretch: int) -> None:
    caps = [8 * 2**i for i in range(len(values))]
    base = neighbour_scatter(sweep(caps, values))
    moved = neighbour_scatter(sweep([c * stretch for c in caps], [v * scale for v in values]))
    assert np.allclose(base.to_numpy(), moved.to_numpy(), equal_nan=True, rtol=1e-6, atol=1e-6)


def test_scatter_against_error_counts_the_inner_runs_per_group() -> None:
    df = pd.concat(
        [sweep([8, 16, 32, 64], [100.0, 110.0, 100.0, 100.0]), sweep([8, 16, 32], [1.0, 2.0, 4.0], gpu="B200")],
        ignore_index=True,
    )
    every = scatter_against_error(df)
    assert int(every["runs"].iloc[0]) == 3
    assert every["throughput error"].iloc[0] == pytest.approx(10.0)
    per_gpu = scatter_against_error(df, "gpu_model")
    assert per_gpu.loc["B200", "runs"] == 1
    assert per_gpu.loc["B200", "energy_per_token scatter"] == pytest.approx(0.0, abs=1e-9)
    assert per_gpu.loc["H100", "throughput scatter"] > 0.0


def test_runs_the_screen_leaves_out_are_no_neighbours_of_those_it_keeps() -> None:
    """A host-bound run at cap 32 would put the cap-16 run over 50 % above its neighbours' line; set apart
    by its `screen` reason, it leaves the kept runs 8, 16, 64 on one power law."""
    caps = [8, 16, 32, 64]
    values = [100.0 * c**0.5 for c in caps]
    values[2] /= 4.0
    df = sweep(caps, values).assign(screen=["", "", "not GPU-bound", ""])
    s = neighbour_scatter(df)[scatter_column("throughput")]
    assert s.iloc[1] == pytest.approx(0.0, abs=1e-9)
    assert s.iloc[[0, 2, 3]].isna().all()
    assert neighbour_scatter(df.drop(columns="screen"))[scatter_column("throughput")].iloc[1] > 50.0


def test_repeat_spread_sets_runs_of_one_cap_side_by_side() -> None:
    df = pd.concat([sweep([8, 16, 32], [100.0, 200.0, 300.0]), sweep([16], [230.0])], ignore_index=True)
    df["config_id"] = ["a|seqs8", "a|seqs16", "a|seqs32", "a|seqs16#2"]
    df["requests"] = [1024, 1024, 1024, 2048]
    df.loc[3, "power_simulated"] = 200.0 * 1.1 * 1.02
    twice = repeat_spread(df)
    assert len(twice) == 1
    line = twice.iloc[0]
    assert line["config_id"] == "a|seqs16" and line["max_num_seqs"] == 16 and line["requests"] == "1024/2048"
    assert line["throughput measured"] == pytest.approx(15.0)
    assert line["throughput simulated"] == pytest.approx(15.0)  # `sweep` simulates 10 % over every measurement
    assert line["power simulated"] == pytest.approx(2.0)
    assert repeat_spread(df.iloc[:3]).empty


def test_a_run_beside_another_phase_is_told_apart() -> None:
    """Caps 8-32 sent 1024 requests, 64-128 sent 2048: the run at 32 has a neighbour of the other
    phase, and so has the run at 64; the level step between the phases shows only across them."""
    caps = [8, 16, 32, 64, 128]
    df = sweep(caps, [100.0, 100.0, 100.0, 120.0, 120.0]).assign(requests=[1024, 1024, 1024, 2048, 2048])
    phase = across_phases(df)
    assert phase.isna().tolist() == [True, False, False, False, True]
    assert phase.iloc[1:4].tolist() == [0.0, 1.0, 1.0]
    table = scatter_by_phase(df, "gpu_model")
    assert table.loc[("H100", "same phase"), "runs"] == 1
    assert table.loc[("H100", "same phase"), "power scatter"] == pytest.approx(0.0, abs=1e-9)
    assert table.loc[("H100", "across phases"), "runs"] == 2
    assert table.loc[("H100", "across phases"), "power scatter"] > 5.0

"""Planning figures: golden values computed by hand, and config validation naming the key."""

from __future__ import annotations

import dataclasses

import pytest

from sim.planning.facility import PlanningConfig, PlanningConfigError, PlanningFigures, planning_figures

CFG = PlanningConfig(pue=1.5, carbon_g_per_kwh=400.0, price_per_kwh=0.10, currency="EUR")


def test_golden_values_one_kwh_per_hour() -> None:
    # 3.6 MJ in 3600 s = 1 kW of IT power; × PUE 1.5 = 1.5 kW at the facility.
    # Year: 1.5 kW × 8760 h = 13,140 kWh = 13.14 MWh; × 400 g/kWh = 5.256 t; × 0.10 = 1314.0.
    f = planning_figures(energy_j=3.6e6, makespan_s=3600.0, peak_power_w=2000.0, gpus=2, busy_s=3600.0, cfg=CFG)
    assert f == PlanningFigures(
        gpus=2,
        annual_energy_mwh=pytest.approx(13.14),
        facility_power_avg_kw=pytest.approx(1.5),
        facility_power_peak_kw=pytest.approx(3.0),
        annual_co2e_t=pytest.approx(5.256),
        annual_cost=pytest.approx(1314.0),
        currency="EUR",
        gpu_utilization=pytest.approx(0.5),
    )


def test_annualisation_scales_with_makespan_not_energy_alone() -> None:
    # The same energy over twice the time is half the average power, so half the year's energy.
    a = planning_figures(7.2e6, 3600.0, 0.0, 1, 0.0, CFG)
    b = planning_figures(7.2e6, 7200.0, 0.0, 1, 0.0, CFG)
    assert a.annual_energy_mwh == pytest.approx(2 * b.annual_energy_mwh)
    assert a.facility_power_avg_kw == pytest.approx(3.0)


def test_hours_per_year_and_default_constants() -> None:
    half_year = dataclasses.replace(CFG, hours_per_year=4380.0)
    f = planning_figures(3.6e6, 3600.0, 1000.0, 1, 1800.0, half_year)
    assert f.annual_energy_mwh == pytest.approx(6.57)
    d = PlanningConfig()
    assert (d.pue, d.carbon_g_per_kwh, d.price_per_kwh, d.currency, d.hours_per_year) == (
        1.56,
        366.0,
        0.0806,
        "USD",
        8760.0,
    )


def test_to_dict_has_summary_keys() -> None:
    keys = set(planning_figures(1.0, 1.0, 1.0, 1, 0.5, CFG).to_dict())
    assert {
        "gpus",
        "annual_energy_mwh",
        "facility_power_avg_kw",
        "facility_power_peak_kw",
        "annual_co2e_t",
        "annual_cost",
    } <= keys


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"pue": 0.9}, "planning.pue"),
        ({"pue": float("nan")}, "planning.pue"),
        ({"carbon_g_per_kwh": -1.0}, "planning.carbon_g_per_kwh"),
        ({"price_per_kwh": float("inf")}, "planning.price_per_kwh"),
        ({"hours_per_year": 0.0}, "planning.hours_per_year"),
        ({"currency": " "}, "planning.currency"),
    ],
)
def test_config_errors_name_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(PlanningConfigError, match=key):
        PlanningConfig(**kwargs)


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((1.0, 0.0, 1.0, 1, 0.0), "makespan_s"),
        ((1.0, 1.0, 1.0, 0, 0.0), "gpus"),
        ((-1.0, 1.0, 1.0, 1, 0.0), "energy_j"),
        ((1.0, 1.0, float("nan"), 1, 0.0), "peak_power_w"),
        ((1.0, 1.0, 1.0, 1, 2.0), "busy_s"),
    ],
)
def test_bad_inputs_name_the_argument(args: tuple, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        planning_figures(*args, cfg=CFG)


def test_app_summary_carries_planning_figures(tmp_path):
    from sim.app import execute, prepare
    from sim.run_config import app_config

    values = {
        "oracle": "llama-3.2-1b_h100",
        "output_dir": str(tmp_path),
        "trace": {"name": "synthetic", "rate_per_s": 2.0, "num_requests": 50, "n_in": 256, "n_out": 64, "seed": 0},
        "server": {},
        "policy": {"name": "none"},
        "tracking": {"enabled": False},
        "planning": {"pue": 1.25},
        "progress": False,
        "plots": False,
    }
    summary = execute(prepare(app_config(values))).to_dict()
    hours = summary["makespan_s"] / 3600.0
    # IT energy × PUE over the run, scaled to a year
    expected_mwh = summary["energy_j"] / 3.6e9 * 1.25 * 8760.0 / hours
    assert summary["annual_energy_mwh"] == pytest.approx(expected_mwh, rel=1e-9)
    assert summary["gpus"] == 1
    assert summary["facility_power_peak_kw"] == pytest.approx(summary["peak_power_w"] * 1.25 / 1e3)


def test_app_rejects_bad_planning_key():
    from sim.run_config import app_config
    from sim.schema import ConfigError

    with pytest.raises(ConfigError, match="planning.pue"):
        app_config({"oracle": "x", "policy": {"name": "none"}, "planning": {"pue": 0.5}})

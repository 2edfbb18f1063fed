"""Clock parameters fitted from runs at locked clocks and power caps (`calibrate.clock_fit`, and
`python -m calibrate.fit` on a `grid=dvfs` table)."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.clock_fit import FITTED, ClockEstimator, predict_runs
from calibrate.fit import fit_measurements
from oracle import features as F
from oracle.clocks import at_clock, clock_spec, coefficients_at, ladder
from oracle.fit import default_settings, fit_oracle
from oracle.model import Oracle
from tests.calibrate.test_fit import fit_cli
from tests.oracle.test_fit import physical_truth, synthetic_table

TRUTH = replace(physical_truth(), overlap=None)  # a step model calibrate.fit can recover exactly
KNOWN = replace(clock_spec(TRUTH.gpu), dynamic_fraction=0.55, floor_voltage_ratio=0.78, voltage_floor_mhz=1200)


def runs(
    clocks: tuple[float | None, ...],
    caps: tuple[float | None, ...],
    lengths: tuple[int, ...] = (128, 1024, 4096),
    batches: tuple[int, ...] = (8, 32),
) -> pd.DataFrame:
    """A `grid=dvfs`-shaped table of 100-request runs, energy and time not yet measured."""
    rows = [
        dict(n_in=i, n_out=o, batch_size=b, num_requests=100, clock_mhz=f, power_limit_w=p)
        for f, p, i, o, b in itertools.product(clocks, caps, lengths, lengths, batches)
    ]
    table = pd.DataFrame(rows).astype({"clock_mhz": float, "power_limit_w": float})
    return table.assign(model="meta-llama/Llama-3.2-1B", gpu=TRUTH.gpu, backend="vllm", idle_power_w=75.0)


def measured(table: pd.DataFrame, spec=KNOWN, oracle: Oracle = TRUTH) -> pd.DataFrame:
    """`table` with the energy and time the simulator gives its runs under clock parameters `spec`."""
    t, e = predict_runs(replace(oracle, clock=spec), table)
    return table.assign(energy_j=e, duration_s=t)


def test_a_run_at_the_default_settings_is_its_summed_steps():
    table = runs((None,), (None,))
    t, e = predict_runs(replace(TRUTH, power_limit_w=None), table)
    x = F.run_features(table.n_in, table.n_out, table.batch_size, table.num_requests)
    np.testing.assert_allclose(t, x @ TRUTH.time_coef_s, rtol=1e-9)
    np.testing.assert_allclose(e, x @ TRUTH.energy_coef_j, rtol=1e-9)


def test_a_run_at_a_locked_clock_is_its_steps_at_that_clock():
    table = runs((990.0,), (None,))
    t, e = predict_runs(replace(TRUTH, power_limit_w=None, clock=KNOWN), table)
    ct, ce = coefficients_at(TRUTH.time_coef_s, TRUTH.energy_coef_j, TRUTH.idle_power_w, KNOWN, 990.0)
    x = F.run_features(table.n_in, table.n_out, table.batch_size, table.num_requests)
    np.testing.assert_allclose(t, x @ ct, rtol=1e-9)
    np.testing.assert_allclose(e, x @ ce, rtol=1e-9)


@settings(max_examples=25, deadline=None)
@given(
    cap=st.floats(120.0, 700.0),
    n_in=st.integers(1, 8192),
    n_out=st.integers(1, 4096),
    batch=st.integers(1, 256),
    clock=st.sampled_from([None, 990.0, 1410.0]),
)
def test_a_capped_run_draws_at_most_its_cap_unless_no_clock_fits(cap, n_in, n_out, batch, clock):
    row = runs((clock,), (cap,), (n_in,), (batch,)).iloc[[0]].assign(n_out=n_out)
    t, e = predict_runs(TRUTH, row)
    slowest = replace(TRUTH, power_limit_w=None, clock=KNOWN)
    t_min, e_min = predict_runs(slowest, row.assign(clock_mhz=float(KNOWN.min_mhz), power_limit_w=np.nan))
    floor_w = float(np.max(e_min / t_min))  # a run at the lowest clock may still draw more than the cap
    assert e[0] / t[0] <= max(cap, floor_w) * (1 + 1e-9)


@pytest.mark.slow  # several seconds: CI runs it, the quick set does not
def test_the_fit_recovers_known_clock_parameters_within_2_pct():
    table = measured(runs((690.0, 990.0, 1200.0, 1410.0, 1755.0, None), (None, 250.0, 400.0)))
    table = table[~default_settings(table, TRUTH.gpu)]
    est = ClockEstimator(TRUTH).fit(table)
    assert est.spec_ is not None and est.report_ is not None
    for k in FITTED:
        assert getattr(est.spec_, k) == pytest.approx(getattr(KNOWN, k), rel=0.02), k
    assert est.report_.undetermined == ()
    assert est.report_.energy_mape_pct < 0.5 < est.report_.default_energy_mape_pct
    t, e = est.predict(table)
    np.testing.assert_allclose(e, table.energy_j, rtol=0.02)


def test_a_voltage_floor_above_every_measured_clock_is_reported_undetermined():
    table = measured(runs((495.0, 690.0), (None,)))  # both below KNOWN's floor (1200 MHz)
    est = ClockEstimator(TRUTH).fit(table)
    assert est.report_ is not None and est.spec_ is not None
    assert "voltage_floor_mhz" in est.report_.undetermined
    assert est.spec_.voltage_floor_mhz == clock_spec(TRUTH.gpu).voltage_floor_mhz  # the default, kept
    assert "not determined" in est.report_.text()


def test_fit_oracle_refuses_runs_at_other_settings_and_says_where_to_go():
    table = measured(runs((990.0, None), (None,)))
    with pytest.raises(ValueError, match="locked SM clock or a power cap.*calibrate.fit"):
        fit_oracle(table)


def test_calibrate_fit_on_a_dvfs_table_fits_the_step_model_on_default_runs_and_the_clock_on_the_rest(tmp_path, capsys):
    default = synthetic_table(TRUTH, noise=0.0, batches=(8, 32), requests=(100,)).assign(clock_mhz=np.nan)
    other = measured(runs((690.0, 990.0, 1410.0), (None, 300.0)))
    table = pd.concat([default.assign(power_limit_w=np.nan), other], ignore_index=True)
    table.to_csv(tmp_path / "dvfs.csv", index=False)
    report = fit_measurements(tmp_path / "dvfs.csv", tmp_path / "o.json", plots=False)
    out = capsys.readouterr().out
    oracle = Oracle.load(tmp_path / "o.json")
    alone, _ = fit_oracle(default)
    np.testing.assert_array_equal(oracle.energy_coef_j, alone.energy_coef_j)  # the other runs left it alone
    assert oracle.power_limit_w == alone.power_limit_w == 700.0  # the caps are not the oracle's limit
    assert oracle.clock is not None and report["clock"]["runs"] == len(other)
    for k in FITTED:
        assert getattr(oracle.clock, k) == pytest.approx(getattr(KNOWN, k), rel=0.02), k
    assert "clock parameters fitted on" in out and "dynamic_fraction" in out
    # the simulator's clock settings use the fitted parameters, not the GPU's defaults
    _, lt, le = ladder(oracle)
    _, lt_default, le_default = ladder(replace(oracle, clock=None))
    np.testing.assert_array_equal(lt, lt_default)  # time at a clock does not depend on the fitted parameters
    assert not np.array_equal(le, le_default)
    assert at_clock(oracle, 990.0).energy_coef_j[0] != at_clock(replace(oracle, clock=None), 990.0).energy_coef_j[0]


def test_calibrate_fit_without_dvfs_runs_says_the_defaults_apply(tmp_path, capsys):
    synthetic_table(TRUTH, noise=0.0).to_csv(tmp_path / "m.csv", index=False)
    report = fit_measurements(tmp_path / "m.csv", tmp_path / "o.json", plots=False)
    assert report["clock"] is None and Oracle.load(tmp_path / "o.json").clock is None
    assert "the GPU's defaults apply" in capsys.readouterr().out


def test_calibrate_fit_refuses_a_table_with_no_default_runs_in_one_line(tmp_path):
    measured(runs((990.0,), (None,))).to_csv(tmp_path / "m.csv", index=False)
    proc = fit_cli(tmp_path / "m.csv", tmp_path / "o.json", tmp_path, "plots=false")
    assert proc.returncode != 0
    assert "every run was measured at a locked SM clock or a power cap" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_oracle_keeps_its_clock_parameters_through_json(tmp_path):
    o = replace(TRUTH, clock=KNOWN)
    path = o.save(tmp_path / "o.json")
    assert Oracle.load(path).clock == KNOWN
    d = json.loads(path.read_text())
    d["clock"]["dynamic_fraction"] = "0.5"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="clock.dynamic_fraction"):
        Oracle.load(path)
    d["clock"]["dynamic_fraction"] = 1.5
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="dynamic_fraction must be in"):
        Oracle.load(path)

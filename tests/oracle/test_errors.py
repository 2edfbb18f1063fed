"""The calibration's held-out errors: drawn models-first, bands that cover, oracles scaled exactly."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from oracle import errors as E
from oracle.model import Oracle


def table(ratios: dict[str, list[tuple[float, float]]], gpu: str = "H100") -> E.HeldOutErrors:
    """Held-out errors of models given as lists of (time ratio, energy ratio) runs."""
    rows = [
        {"gpu": gpu, "model": m, "config_id": f"{m}|{i}", "task": "chat", "time_ratio": t, "energy_ratio": e}
        for m, runs in ratios.items()
        for i, (t, e) in enumerate(runs)
    ]
    return E.HeldOutErrors(gpu, pd.DataFrame(rows, columns=E.COLUMNS))


def test_every_model_is_drawn_equally_often_whatever_its_number_of_runs():
    errors = table({"many": [(1.0, 1.0)] * 30, "one": [(2.0, 3.0)]})
    t, e = errors.draw(np.random.default_rng(0), 20_000)
    assert abs((t == 2.0).mean() - 0.5) < 0.02
    assert np.all((e == 3.0) == (t == 2.0))  # a run's time and energy errors are drawn together


def test_draws_repeat_under_a_seed():
    errors = E.held_out_for(Oracle.load("llama-3.1-8b_h100"))
    a, b = (errors.draw(np.random.default_rng(7), 50) for _ in range(2))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_the_interval_weights_models_equally():
    errors = table({"low": [(0.5, 0.5)] * 9, "mid": [(1.0, 1.0)], "high": [(2.0, 2.0)]})
    assert errors.interval("energy_ratio", 0.5) == (0.5, 2.0)  # each model a third, whatever its runs
    assert errors.interval("time_ratio", 0.2) == (1.0, 1.0)


def test_the_corrected_level_widens_more_for_fewer_models():
    assert E.corrected_level(0.9, 9) == pytest.approx(1.0)
    assert E.corrected_level(0.9, 14) == pytest.approx(0.9 * 15 / 14)
    assert E.corrected_level(0.9, 1000) == pytest.approx(0.9009)
    assert E.corrected_level(0.95, 5) == 1.0
    with pytest.raises(ValueError, match="models must be ≥ 1"):
        E.corrected_level(0.9, 0)


def test_coverage_counts_a_left_out_model_inside_or_outside_the_others_band():
    errors = table({f"m{i}": [(1.0 + 0.01 * i, 1.0 + 0.01 * i)] for i in range(10)} | {"odd": [(5.0, 0.9)]})
    cov = E.coverage(errors, 0.9)
    assert cov.loc["odd", "time_covered"] == 0.0  # far above every other model's error
    assert cov.loc["odd", "energy_covered"] == 0.0  # below the others' lowest
    assert cov.loc["m5", "energy_covered"] == 1.0


def test_the_shipped_errors_cover_every_calibrated_model_and_mean_what_they_say():
    shipped = E.load_held_out()
    assert set(shipped["gpu"]) == {"H100", "B200", "H100_refined", "B200_refined"}
    assert np.all(shipped[["time_ratio", "energy_ratio"]].to_numpy() > 0)
    for gpu, target in (("H100", 0.85), ("B200", 0.85), ("H100_refined", 0.85), ("B200_refined", 0.85)):  # #26's
        errors = E.HeldOutErrors.of(gpu, shipped)
        cov = E.coverage(errors, 0.9)
        share = float((cov["energy_covered"] * cov["runs"]).sum() / cov["runs"].sum())  # counted by hand here
        assert share >= target, (gpu, share)
        assert E.band_check(errors, 0.9).energy_covered == pytest.approx(share)
        assert errors.models >= 14


@pytest.mark.parametrize(("name", "label"), [("llama-3.1-8b_h100", "H100_refined"), ("llama-3.1-8b_h200", "H100"),
                                             ("llama-3.1-8b_a100", "H100"), ("llama-3.1-8b_b200", "B200_refined"),
                                             ("llama-3.1-70b_h100_tp2", "H100")])  # fmt: skip
def test_an_oracle_takes_the_errors_of_the_calibration_its_gpu_rests_on(name, label):
    """A measured configuration refined on its runs takes its GPU's refined configurations' errors
    (each run left out of its own configuration); any other oracle its GPU family's."""
    errors = E.held_out_for(Oracle.load(name))
    assert errors.gpu == label
    words = "leave-one-run-out errors" if label.endswith("_refined") else "leave-one-model-out errors"
    assert errors.describe().startswith(words)


def test_refined_bands_are_narrower_than_a_model_nobody_measured_gets():
    shipped = E.load_held_out()
    for gpu in ("H100", "B200"):
        family = E.HeldOutErrors.of(gpu, shipped).interval("energy_ratio", 0.9)
        refined = E.HeldOutErrors.of(E.refined_label(gpu), shipped).interval("energy_ratio", 0.9)
        assert refined[1] - refined[0] < family[1] - family[0], gpu


def test_an_oracle_on_a_gpu_no_calibration_covers_is_refused_by_name():
    other = replace(Oracle.load("llama-3.1-8b_h100"), gpu="Some GPU 48GB")
    with pytest.raises(E.NoHeldOutErrorsError, match="Some GPU 48GB.*no calibration covers"):
        E.held_out_for(other)


def test_a_scaled_oracle_scales_every_step_time_and_energy_and_keeps_idle_power():
    moe = Oracle.load("qwen3-30b-a3b_h100")
    assert moe.experts is not None
    x = np.array([[1.0, 64.0, 64 * 900.0, 1.0, 512.0, 512.0**2 / 2], [1.0, 8.0, 8 * 100.0, 0.0, 0.0, 0.0]])
    s = E.scaled(moe, 1.3, 0.8)
    np.testing.assert_allclose(s.step_time(x), 1.3 * moe.step_time(x), rtol=1e-12)
    np.testing.assert_allclose(s.step_energy(x), 0.8 * moe.step_energy(x), rtol=1e-12)
    assert s.idle_power_w == moe.idle_power_w
    with pytest.raises(ValueError, match="finite and > 0"):
        E.scaled(moe, 0.0, 1.0)

"""oracle.plots: the energy-per-token curves mark where they leave the calibrated range."""

from __future__ import annotations

import numpy as np
import pytest

from oracle import plots
from oracle.model import Oracle


@pytest.fixture
def drawn(monkeypatch):
    """The figures oracle.plots draws, kept open instead of saved."""
    figures: list = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    return figures


def test_the_extrapolated_part_of_each_curve_is_dashed_on_a_grey_band(drawn, tmp_path):
    oracle = Oracle.load("llama-3.1-8b_h100")
    lo, hi = oracle.calibrated.n_out
    plots.plot_energy_per_token(oracle, tmp_path / "e.png", n_ins=(512,))
    ax = drawn[0].axes[0]
    inside, outside = (line for line in ax.lines if line.get_marker() in ("None", None, ""))
    x_in, x_out = np.asarray(inside.get_xdata(), float), np.asarray(outside.get_xdata(), float)
    assert inside.get_linestyle() == "-" and outside.get_linestyle() == "--"
    assert np.nanmin(x_in) == lo and np.nanmax(x_in) == hi
    assert np.all((x_out[np.isfinite(x_out)] <= lo) | (x_out[np.isfinite(x_out)] >= hi))
    assert np.nanmin(x_out) < lo and np.nanmax(x_out) > hi
    assert len(ax.patches) == 2  # the two grey bands, below and above the calibrated range


def test_a_curve_whose_n_in_is_outside_the_calibrated_range_is_dashed_throughout(drawn, tmp_path):
    oracle = Oracle.load("llama-3.1-8b_h100")
    n_in = int(oracle.calibrated.n_in[1] * 1.5)  # within 2×: no range warning, still extrapolated
    plots.plot_energy_per_token(oracle, tmp_path / "e.png", n_ins=(n_in,))
    first = drawn[0].axes[0].lines[0]
    assert first.get_linestyle() == "--" and "outside the calibrated range" in first.get_label()

"""The synthetic generator converges to its rate, burstiness and length parameters."""

import numpy as np
import pytest

import traces
from traces.synthetic import LengthFit, arrivals


@pytest.mark.parametrize("arrival, cv", [("poisson", 1.0), ("gamma", 0.5), ("gamma", 3.0)])
def test_arrival_rate_and_cv_converge(arrival, cv):
    t = arrivals(200_001, 8.0, arrival, cv, np.random.default_rng(1))
    gaps = np.diff(t)
    assert t[0] == 0.0
    assert abs(len(gaps) / t[-1] / 8.0 - 1) < 0.02
    assert abs(gaps.std() / gaps.mean() / cv - 1) < 0.03


def test_fixed_shapes_and_seeded_output():
    df = traces.load("synthetic", n_in=512, n_out=128, rate_per_s=4, num_requests=1000, seed=7)
    assert set(df["n_in"]) == {512} and set(df["n_out"]) == {128}
    again = traces.load("synthetic", n_in=512, n_out=128, rate_per_s=4, num_requests=1000, seed=7)
    assert df.equals(again)
    other = traces.load("synthetic", n_in=512, n_out=128, rate_per_s=4, num_requests=1000, seed=8)
    assert not df["arrival_s"].equals(other["arrival_s"])


def test_fitted_lengths_converge_to_the_fit():
    fit = LengthFit.fit(traces.load("azure_chat"))
    df = traces.load("synthetic", lengths_from="azure_chat", num_requests=100_000, seed=2)
    logs = np.log(df[["n_in", "n_out"]].to_numpy(dtype=float))
    # rounding and clipping to >= 1 and the trace max shift the log moments a little
    np.testing.assert_allclose(logs.mean(axis=0), fit.mu_log, atol=0.01)
    np.testing.assert_allclose(np.cov(logs, rowvar=False), fit.cov_log, atol=0.03)
    assert df["n_in"].max() <= fit.max_in and df["n_out"].min() >= 1


def test_one_fixed_length_other_drawn():
    df = traces.load("synthetic", lengths_from="azure_chat", n_out=64, num_requests=2000)
    assert set(df["n_out"]) == {64} and df["n_in"].nunique() > 100


def test_options_apply_to_synthetic_traces():
    df = traces.load("synthetic", n_in=1, n_out=1, rate_per_s=10, num_requests=5000, rate_scale=2.0, max_requests=1000)
    assert len(df) == 1000 and abs(999 / df["arrival_s"].iat[-1] / 20 - 1) < 0.1


def test_fitted_lengths_are_clipped_to_the_trace_range():
    fit = LengthFit.fit(traces.load("azure_code"))
    n_in, n_out = fit.sample(50_000, np.random.default_rng(0))
    assert n_in.max() == fit.max_in == 7437 and n_out.min() >= 1 and n_in.dtype == np.int32

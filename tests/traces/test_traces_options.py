"""Window, sampling, rate scaling and cap: exact on a small trace, seeded."""

import numpy as np
import pytest

import traces


@pytest.fixture
def trace(write_csv):
    rows = "".join(f"{t},{i + 1},{i + 2}\n" for i, t in enumerate([10, 11, 13, 16, 20, 25]))
    return write_csv("arrival_s,n_in,n_out\n" + rows)


def test_base_trace_is_rebased_to_zero(trace):
    assert traces.load(trace)["arrival_s"].tolist() == [0, 1, 3, 6, 10, 15]


def test_window_is_in_source_seconds_and_rebased(trace):
    df = traces.load(trace, start_s=1, duration_s=9)
    assert df["n_in"].tolist() == [2, 3, 4]
    assert df["arrival_s"].tolist() == [0, 2, 5]
    assert "window [1, 10) s: kept 3 of 6" in df.attrs["load_summary"]


def test_rate_scale_compresses_inter_arrivals(trace):
    df = traces.load(trace, rate_scale=2.0)
    assert df["arrival_s"].tolist() == [0, 0.5, 1.5, 3, 5, 7.5]
    assert traces.load(trace, rate_scale=0.5)["arrival_s"].iat[-1] == 30


def test_max_requests_after_scaling(trace):
    df = traces.load(trace, rate_scale=2.0, max_requests=2)
    assert df["n_in"].tolist() == [1, 2] and df["arrival_s"].tolist() == [0, 0.5]


def test_sampling_is_seeded_and_keeps_about_the_fraction(tmp_path):
    rows = "".join(f"{i},1,1\n" for i in range(20_000))
    path = tmp_path / "big.csv"
    path.write_text("arrival_s,n_in,n_out\n" + rows)
    a = traces.load(path, sample_frac=0.25, seed=3)
    b = traces.load(path, sample_frac=0.25, seed=3)
    c = traces.load(path, sample_frac=0.25, seed=4)
    assert a.equals(b) and not a.equals(c)
    assert abs(len(a) / 20_000 - 0.25) < 0.02
    assert np.all(np.diff(a["arrival_s"]) >= 1) and a["arrival_s"].iat[0] == 0.0


def test_empty_result_and_model_on_trace_without_models(trace):
    with pytest.raises(ValueError, match="no requests left"):
        traces.load(trace, start_s=100)
    with pytest.raises(ValueError, match="model='GPT-4' is invalid for trace 'file'"):
        traces.load(trace, model="GPT-4")

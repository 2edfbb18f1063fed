"""Block bootstrap of a trace: windows redrawn whole, arrivals kept within them, prompts only the
traffic shares found twice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces.bootstrap import resample_windows


def frame(arrivals, hash_ids=None) -> pd.DataFrame:
    df = pd.DataFrame(
        {
            "arrival_s": np.asarray(arrivals, dtype=float),
            "n_in": np.arange(1, len(arrivals) + 1, dtype=np.int32),
            "n_out": np.arange(1, len(arrivals) + 1, dtype=np.int32) * 10,
        }
    )
    if hash_ids is not None:
        df["hash_ids"] = hash_ids
    df.attrs["name"] = "t"
    return df


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=60),
    st.integers(1, 12),
    st.integers(0, 2**32 - 1),
)
def test_each_window_is_copied_whole_and_arrivals_stay_sorted_within_the_span(arrivals, windows, seed):
    df = frame(np.sort(arrivals) - min(arrivals))
    out = resample_windows(df, windows, np.random.default_rng(seed))
    a = out["arrival_s"].to_numpy()
    span = df["arrival_s"].iloc[-1]
    assert np.all(np.diff(a) >= 0) and a[0] >= 0 and a[-1] <= span + 1e-9 * max(span, 1)
    assert set(out["n_in"]) <= set(df["n_in"])
    assert np.all(out["n_out"] == out["n_in"] * 10)  # rows copied whole
    assert out.attrs == df.attrs and list(out.columns) == list(df.columns)


def test_the_same_seed_gives_the_same_trace_and_another_seed_another():
    df = frame(np.linspace(0, 100, 200))
    a, b = (resample_windows(df, 10, np.random.default_rng(3)) for _ in range(2))
    pd.testing.assert_frame_equal(a, b)
    assert not resample_windows(df, 10, np.random.default_rng(4))["n_in"].equals(a["n_in"])


def test_one_window_is_the_trace_itself():
    df = frame([0.0, 0.5, 2.0, 9.0])
    pd.testing.assert_frame_equal(resample_windows(df, 1, np.random.default_rng(0)), df)


def test_a_window_keeps_its_requests_offsets_from_its_start():
    df = frame([0.0, 1.0, 4.0, 5.0, 5.5, 10.0])  # windows of 5 s: [0, 5) and [5, 10]
    out = resample_windows(df, 2, np.random.default_rng(1))
    first = out[out["arrival_s"] < 5.0]
    second = out[out["arrival_s"] >= 5.0]
    for part, start in ((first, 0.0), (second, 5.0)):
        source = df[df["n_in"].isin(part["n_in"])]
        offsets = source["arrival_s"].to_numpy() - (0.0 if source["arrival_s"].iloc[0] < 5 else 5.0)
        np.testing.assert_allclose(np.sort(part["arrival_s"].to_numpy() - start), np.sort(offsets))


def test_a_trace_sent_at_once_is_cut_into_windows_of_consecutive_requests():
    df = frame(np.zeros(100))
    out = resample_windows(df, 4, np.random.default_rng(2))
    assert len(out) == 100 and np.all(out["arrival_s"] == 0.0)
    blocks = out["n_in"].to_numpy().reshape(4, 25)
    assert np.all(np.diff(blocks, axis=1) == 1)  # each block 25 consecutive requests
    assert set(blocks[:, 0]) <= {1, 26, 51, 76}


def test_a_window_drawn_twice_renames_the_prompts_only_it_has():
    shared = [7]  # a system prompt every window shares
    ids = [shared + [100], shared + [101], shared + [200], shared + [201]]  # windows: [0, 1) and [1, 2]
    df = frame([0.0, 0.5, 1.5, 2.0], pd.Series(ids))
    rng = next(
        np.random.default_rng(s) for s in range(100) if len(set(np.random.default_rng(s).integers(0, 2, 2))) == 1
    )
    out = resample_windows(df, 2, rng)
    lists = [list(x) for x in out["hash_ids"]]
    assert all(x[0] == 7 for x in lists)  # the shared block stays shared
    private = [x[1] for x in lists]
    assert len(set(private)) == 4  # the copy's own blocks got new names: none is found cached twice


def test_bad_window_counts_and_empty_traces_are_refused():
    with pytest.raises(ValueError, match="windows must be ≥ 1"):
        resample_windows(frame([0.0]), 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty"):
        resample_windows(frame([]), 3, np.random.default_rng(0))


def test_a_window_lands_only_within_reach_of_where_it_was():
    df = frame(np.linspace(0, 100, 500))  # ten windows of 10 s
    last = set(df.loc[df["arrival_s"] >= 90, "n_in"])
    for seed in range(20):
        out = resample_windows(df, 10, np.random.default_rng(seed), reach=1)
        from_last = out["n_in"].isin(last).to_numpy()
        assert np.all(out["arrival_s"].to_numpy()[from_last] >= 80), seed  # positions 8 and 9 only
        anywhere = resample_windows(df, 10, np.random.default_rng(seed), reach=10)
        assert anywhere["arrival_s"].max() <= 100


def test_a_reach_below_one_is_refused():
    with pytest.raises(ValueError, match="reach must be ≥ 1"):
        resample_windows(frame([0.0, 1.0]), 2, np.random.default_rng(0), reach=0)

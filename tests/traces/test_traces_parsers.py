"""Parsers for the BurstGPT, Azure 2024 and native formats, on fixtures in the real formats."""

import numpy as np
import pandas as pd
import pytest

import traces


def test_burstgpt_first_rows_and_failed_requests_dropped(fixtures):
    df = traces.load(fixtures / "burstgpt_head.csv")
    assert len(df) == 8
    assert df[["arrival_s", "n_in", "n_out"]].iloc[:2].values.tolist() == [[0, 472, 18], [40, 1087, 230]]
    assert df["model"].iat[0] == "ChatGPT" and df["log_type"].iat[0] == "Conversation log"
    assert isinstance(df["model"].dtype, pd.CategoricalDtype)
    assert "10 rows read; dropped 2 failed requests (0 output tokens)" in df.attrs["load_summary"]
    assert "kept 1 requests with the same timestamp" in df.attrs["load_summary"]


def test_burstgpt_keep_failed(fixtures):
    df = traces.load(fixtures / "burstgpt_head.csv", keep_failed=True)
    assert len(df) == 10 and (df["n_out"] == 0).sum() == 2
    assert "kept 2 failed requests" in df.attrs["load_summary"]


@pytest.mark.parametrize("model, rows", [("GPT-4", 2), ("ChatGPT", 6)])
def test_burstgpt_model_filter(fixtures, model, rows):
    df = traces.load(fixtures / "burstgpt_head.csv", model=model)
    assert len(df) == rows and set(df["model"]) == {model}
    assert df["arrival_s"].iat[0] == 0.0
    assert f"model={model}: kept {rows} of 8" in df.attrs["load_summary"]


def test_azure_2024_mixed_timestamp_formats(fixtures):
    df = traces.load(fixtures / "azure_2024_head.csv")
    expected = np.array([0, 0.014427, 0.99007, 1.24007, 1.99007, 1.99007, 3.490071])
    np.testing.assert_allclose(df["arrival_s"], expected, atol=1e-9)
    assert df["n_in"].tolist()[:3] == [2162, 1145, 4340]
    assert df.attrs["t0"] == "2024-05-10T00:00:00.009930+00:00"
    assert "3 timestamps without fractional seconds" in df.attrs["load_summary"]


def test_mixed_offsets_and_naive_timestamps_are_reported(write_csv):
    path = write_csv(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,10,2\n2023-11-16 18:17:04+00:00,5,1\n"
    )
    df = traces.load(path)
    np.testing.assert_allclose(df["arrival_s"], [0, 0.02004])
    assert "mixed UTC offsets" in df.attrs["load_summary"]


def test_native_format_round_trips_through_csv_and_parquet(tmp_path, fixtures):
    df = traces.load(fixtures / "burstgpt_head.csv")
    for path in (tmp_path / "t.csv", tmp_path / "t.parquet"):
        df.to_csv(path, index=False) if path.suffix == ".csv" else df.to_parquet(path)
        back = traces.load(path)
        pd.testing.assert_frame_equal(back[["arrival_s", "n_in", "n_out"]], df[["arrival_s", "n_in", "n_out"]])
        assert back["model"].astype(str).tolist() == df["model"].astype(str).tolist()


def test_gzip_csv_is_read(tmp_path, fixtures):
    path = tmp_path / "b.csv.gz"
    pd.read_csv(fixtures / "burstgpt_head.csv").to_csv(path, index=False)
    assert len(traces.load(path)) == 8

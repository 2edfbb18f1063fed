"""Bad input is either fixed and reported, or rejected naming the file, column and line."""

import re

import numpy as np
import pandas as pd
import pytest

import traces

AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROW = "2023-11-16 18:17:0{},{},{}\n"


def azure(*rows):
    return AZ + "".join(ROW.format(*r) for r in rows)


def test_missing_column_is_rejected(write_csv):
    path = write_csv("TIMESTAMP,ContextTokens,Generated\n2023-11-16 18:17:03,1,1\n")
    expected = r"closest is azure, missing column\(s\) \['GeneratedTokens'\]"
    with pytest.raises(ValueError, match=expected):
        traces.load(path)


def test_misnamed_columns_differing_in_case_or_spacing_are_read_and_reported(write_csv):
    path = write_csv("timestamp,request_tokens,RESPONSE TOKENS\n1.5,10,2\n")
    df = traces.load(path)
    assert df["n_in"].tolist() == [10]
    assert "column 'request_tokens' read as 'Request tokens'" in df.attrs["load_summary"]


@pytest.mark.parametrize(
    "rows, column, line, problem",
    [
        ([(1, 10, 2), (2, "ten", 3)], "ContextTokens", 3, "'ten' is not an integer token count"),
        ([(1, 10, 2), (2, 10, 2.5)], "GeneratedTokens", 3, "'2.5' is not an integer token count"),
        ([(1, 10, 2), (2, 10, 3), (3, -4, 3)], "ContextTokens", 4, "-4 is a negative token count"),
        ([(1, 10, 2), (2, 10, "")], "GeneratedTokens", 3, "'' is missing"),
    ],
)
def test_bad_values_name_file_column_and_line(write_csv, rows, column, line, problem):
    path = write_csv(azure(*rows))
    with pytest.raises(ValueError) as err:
        traces.load(path)
    assert str(err.value) == (f"{path}: column {column!r}, line {line} (data row {line - 1}): {problem}")


def test_bad_timestamp_is_rejected(write_csv):
    path = write_csv(AZ + "2023-11-16 18:17:01,1,1\nyesterday,1,1\n")
    with pytest.raises(
        ValueError, match=re.escape(f"{path}: column 'TIMESTAMP', line 3 (data row 2): 'yesterday' is not an ISO 8601")
    ):
        traces.load(path)


def test_non_finite_seconds_are_rejected(write_csv):
    path = write_csv("arrival_s,n_in,n_out\n0,1,1\nnan,1,1\n")
    with pytest.raises(ValueError, match="column 'arrival_s', line 3"):
        traces.load(path)


def test_zero_tokens_dropped_and_counted(write_csv):
    df = traces.load(write_csv(azure((1, 0, 2), (2, 10, 0), (3, 10, 2))))
    assert df["n_in"].tolist() == [10]
    summary = df.attrs["load_summary"]
    assert "dropped 1 rows with 0 input tokens" in summary
    assert "dropped 1 failed requests (0 output tokens)" in summary


def test_unsorted_and_duplicate_timestamps_are_sorted_kept_and_reported(write_csv):
    df = traces.load(write_csv(azure((5, 1, 1), (3, 2, 2), (3, 3, 3), (4, 4, 4))))
    assert df["n_in"].tolist() == [2, 3, 4, 1]
    assert df["arrival_s"].tolist() == [0.0, 0.0, 1.0, 2.0]
    assert "sorted 1 out-of-order timestamps" in df.attrs["load_summary"]
    assert "kept 1 requests with the same timestamp" in df.attrs["load_summary"]


def test_ragged_csv_and_empty_files_are_rejected(write_csv):
    with pytest.raises(ValueError, match="not a well-formed CSV"):
        traces.load(write_csv(AZ + "2023-11-16 18:17:01,1,1,9\n"))
    with pytest.raises(ValueError, match="no data rows"):
        traces.load(write_csv(AZ, "header_only.csv"))
    with pytest.raises(ValueError, match="empty file"):
        traces.load(write_csv("", "empty.csv"))


def test_unknown_name_or_missing_file():
    with pytest.raises(FileNotFoundError, match="neither a trace name"):
        traces.load("azure_chatt")


def _parquet(tmp_path, frame, name="t.parquet"):
    path = tmp_path / name
    frame.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_parquet_datetime_arrivals_become_seconds_from_the_first(tmp_path, unit):
    start = pd.Timestamp("2024-05-10 12:00:00")
    stamps = (start + pd.to_timedelta([0.0, 2.0, 5.0], unit="s")).as_unit(unit)
    path = _parquet(tmp_path, pd.DataFrame({"arrival_s": stamps, "n_in": [10, 20, 30], "n_out": [1, 2, 3]}))
    df = traces.load(path)
    np.testing.assert_allclose(df["arrival_s"], [0.0, 2.0, 5.0])
    assert df.attrs["t0"] == "2024-05-10T12:00:00+00:00"
    assert "converted to seconds from the earliest timestamp" in df.attrs["load_summary"]


def test_azure_parquet_with_a_timestamp_column_is_read(tmp_path):
    stamps = pd.to_datetime(["2023-11-16 18:17:03.5", "2023-11-16 18:17:01.0"], utc=True)
    frame = pd.DataFrame({"TIMESTAMP": stamps, "ContextTokens": [10, 20], "GeneratedTokens": [2, 3]})
    df = traces.load(_parquet(tmp_path, frame))
    np.testing.assert_allclose(df["arrival_s"], [0.0, 2.5])
    assert df["n_in"].tolist() == [20, 10]


def test_parquet_duration_arrivals_are_seconds(tmp_path):
    frame = pd.DataFrame({"arrival_s": pd.to_timedelta([0, 250], unit="ms"), "n_in": [1, 2], "n_out": [1, 1]})
    np.testing.assert_allclose(traces.load(_parquet(tmp_path, frame))["arrival_s"], [0.0, 0.25])


def test_parquet_whole_float_token_counts_are_read_as_csv_integers_are(tmp_path):
    frame = pd.DataFrame({"arrival_s": [0.0, 1.0], "n_in": [10.0, 20.0], "n_out": [3.0, 4.0]})
    df = traces.load(_parquet(tmp_path, frame))
    assert df["n_in"].tolist() == [10, 20] and df["n_out"].dtype == np.int32


@pytest.mark.parametrize(
    "column, values, row, problem",
    [
        ("n_out", [3.0, 4.7, 5.0], 2, "4.7 is not an integer token count"),
        ("n_in", ["10", "twenty", "30"], 2, "'twenty' is not an integer token count"),
        ("n_in", [10.0, np.nan, 30.0], 2, "is missing"),
        ("arrival_s", ["0", "1.5", "soon"], 3, "'soon' is not a number of seconds"),
        ("n_in", [True, False, True], 1, "is a bool value, but the column must hold integer token counts"),
    ],
)
def test_bad_parquet_values_name_file_column_and_row(tmp_path, column, values, row, problem):
    frame = pd.DataFrame({"arrival_s": [0.0, 1.0, 2.0], "n_in": [10, 20, 30], "n_out": [1, 2, 3]})
    frame[column] = values
    path = _parquet(tmp_path, frame)
    with pytest.raises(ValueError, match=re.escape(f"{path}: column {column!r}, row {row}: ")) as err:
        traces.load(path)
    assert problem in str(err.value)


def test_azure_parquet_with_numeric_timestamps_names_the_column(tmp_path):
    frame = pd.DataFrame({"TIMESTAMP": [1.7e9, 1.7e9 + 1], "ContextTokens": [10, 20], "GeneratedTokens": [2, 3]})
    path = _parquet(tmp_path, frame)
    with pytest.raises(ValueError, match=re.escape(f"{path}: column 'TIMESTAMP', row 1: 1700000000.0 is a double")):
        traces.load(path)


def test_csv_token_counts_written_as_whole_floats_are_read(write_csv):
    df = traces.load(write_csv("arrival_s,n_in,n_out\n0,10,3.0\n1,20,5\n"))
    assert df["n_out"].tolist() == [3, 5]


def test_a_huge_arrival_gap_is_warned_about_at_load_time(write_csv, caplog):
    path = write_csv("arrival_s,n_in,n_out\n0,10,2\n1.5,10,2\n1000000000000,10,2\n1000000000002,10,2\n")
    with caplog.at_level("WARNING", logger="traces"):
        df = traces.load(path)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "1 arrival gap(s) longer than 3,600 s make up 100 % of the trace" in warning
    assert "between requests 1 and 2 (arrival_s 1.500 and 1,000,000,000,000.000)" in warning
    assert "rate_scale" in warning and "duration_s" in warning
    assert "arrival gap(s)" in df.attrs["load_summary"]


def test_a_busy_window_of_the_same_trace_is_not_warned_about(write_csv, caplog):
    path = write_csv("arrival_s,n_in,n_out\n0,10,2\n1.5,10,2\n1000000000000,10,2\n1000000000002,10,2\n")
    with caplog.at_level("WARNING", logger="traces"):
        df = traces.load(path, duration_s=100)
    assert len(df) == 2 and "gap" not in caplog.text


def test_shipped_traces_with_minute_long_gaps_are_not_warned_about(caplog):
    with caplog.at_level("WARNING", logger="traces"):
        df = traces.load("azure_code")
    assert df["arrival_s"].diff().max() > 200 and "gap" not in caplog.text


def test_parquet_categorical_and_unsigned_token_columns_are_read(tmp_path):
    frame = pd.DataFrame(
        {
            "arrival_s": [0.0, 1.0],
            "n_in": pd.Series(["10", "20"], dtype="category"),
            "n_out": np.array([3, 4], dtype=np.uint64),
        }
    )
    df = traces.load(_parquet(tmp_path, frame))
    assert df["n_in"].tolist() == [10, 20] and df["n_out"].tolist() == [3, 4]

"""Bad input is either fixed and reported, or rejected naming the file, column and line."""

import re

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


@pytest.mark.parametrize("rows, column, line, problem", [
    ([(1, 10, 2), (2, "ten", 3)], "ContextTokens", 3, "'ten' is not an integer token count"),
    ([(1, 10, 2), (2, 10, 2.5)], "GeneratedTokens", 3, "'2.5' is not an integer token count"),
    ([(1, 10, 2), (2, 10, 3), (3, -4, 3)], "ContextTokens", 4, "-4 is a negative token count"),
    ([(1, 10, 2), (2, 10, "")], "GeneratedTokens", 3, "'' is missing"),
])
def test_bad_values_name_file_column_and_line(write_csv, rows, column, line, problem):
    path = write_csv(azure(*rows))
    with pytest.raises(ValueError) as err:
        traces.load(path)
    assert str(err.value) == (f"{path}: column {column!r}, line {line} (data row {line - 1}): "
                              f"{problem}")


def test_bad_timestamp_is_rejected(write_csv):
    path = write_csv(AZ + "2023-11-16 18:17:01,1,1\nyesterday,1,1\n")
    with pytest.raises(ValueError, match=re.escape(
            f"{path}: column 'TIMESTAMP', line 3 (data row 2): 'yesterday' is not an ISO 8601")):
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

"""The measurement table: validation names the column and the first bad row; appends are safe."""

import os

import pandas as pd
import pytest

from calibrate.table import REQUIRED, MeasurementTableError, append_row, read_table, validate_table

ROW = dict(
    model="m", gpu="g", backend="b", n_in=64, n_out=64, batch_size=1, num_requests=10, energy_j=5.0, duration_s=1.0
)


def table(n=3, **over):
    df = pd.DataFrame([ROW] * n)
    for k, v in over.items():
        df[k] = df[k].astype(object)
        df.loc[1, k] = v
    return df


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("n_in", -5, "column 'n_in' row 1 is not positive"),
        ("energy_j", float("nan"), "column 'energy_j' row 1 is missing"),
        ("energy_j", 0.0, "column 'energy_j' row 1 is not positive"),
        ("n_out", "abc", "column 'n_out' row 1 is not a number: 'abc'"),
        ("batch_size", 2.5, "column 'batch_size' row 1 is not an integer"),
    ],
)
def test_bad_values_name_column_and_row(column, value, message):
    with pytest.raises(MeasurementTableError, match=message):
        validate_table(table(**{column: value}), source="t.csv")


def test_missing_columns_are_listed():
    with pytest.raises(MeasurementTableError, match=r"missing required column\(s\) \['energy_j'\]"):
        validate_table(table().drop(columns="energy_j"))


def test_timing_only_tables_are_refused_for_energy():
    df = table()
    df["energy_j"] = float("nan")
    with pytest.raises(MeasurementTableError, match="meter=none"):
        validate_table(df)
    assert len(validate_table(df, require_energy=False)) == 3


def test_csv_and_parquet_read_the_same(tmp_path):
    df = table()
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.csv"), read_table(tmp_path / "t.parquet"))
    with pytest.raises(FileNotFoundError):
        read_table(tmp_path / "none.csv")


def test_append_row_writes_header_once_and_refuses_new_columns(tmp_path):
    path = tmp_path / "m.csv"
    append_row(path, {**ROW, "repeat": 0})
    append_row(path, {**ROW, "repeat": 1})
    df = read_table(path)
    assert list(df.columns) == [*REQUIRED, "repeat"] and df["repeat"].tolist() == [0, 1]
    with pytest.raises(MeasurementTableError, match="header lacks"):
        append_row(path, {**ROW, "surprise": 1})
    with pytest.raises(MeasurementTableError, match="lacks required"):
        append_row(path, {"model": "m"})


def test_cut_short_lines_are_set_aside_and_the_rest_kept(tmp_path, caplog):
    from calibrate.table import rejected_path, set_aside_partial_lines

    path = tmp_path / "m.csv"
    for n_in in (64, 128, 256):
        append_row(path, {**ROW, "n_in": n_in})
    good = path.read_bytes()
    merged = b"m,g,b,512,64," + good.splitlines(keepends=True)[1]  # a cut line, then the next row on it
    path.write_bytes(good + merged + b"m,g,b,1024,6")
    with caplog.at_level("WARNING", logger="calibrate.table"):
        assert set_aside_partial_lines(path) == [5, 6]
    assert path.read_bytes() == good and len(read_table(path)) == 3
    assert rejected_path(path).read_bytes() == merged + b"m,g,b,1024,6\n"
    assert f"{path}, line 5 has 14 fields, the header has 9" in caplog.text
    assert f"{path}, line 6 was cut short" in caplog.text
    assert set_aside_partial_lines(path) == []


def test_a_cut_short_header_leaves_an_empty_table(tmp_path):
    from calibrate.table import set_aside_partial_lines

    path = tmp_path / "m.csv"
    path.write_bytes(b"model,gpu,back")
    assert set_aside_partial_lines(path) == [1]
    assert path.read_bytes() == b""
    append_row(path, ROW)
    assert len(read_table(path)) == 1


def test_read_table_refuses_a_fifo_without_blocking(tmp_path):
    from tests.oracle.test_files import raised_in_subprocess

    fifo = tmp_path / "m.csv"
    os.mkfifo(fifo)
    assert raised_in_subprocess(f"calibrate.table.read_table({str(fifo)!r})") == (
        f"NotARegularFileError: measurement table {fifo} is not a regular file (a FIFO)"
    )

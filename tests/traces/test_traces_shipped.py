"""The shipped Azure 2023 traces match PROVENANCE.md exactly."""

import gzip
import hashlib

import pandas as pd
import pytest

import traces
from traces.sources import SOURCES, shipped_path
from traces.stats import trace_stats

# name: rows, (mean, std, median, p99) in, (mean, std, median) out, mean rate, first, last
EXPECTED = {
    "azure_chat": (
        19_366,
        (1154.70, 1108.82, 1020, 4142),
        (211.13, 162.87, 129),
        5.53,
        "2023-11-16 18:15:47",
        "2023-11-16 19:14:08",
    ),
    "azure_code": (
        8_819,
        (2047.85, 1973.88, 1469, None),
        (27.88, 59.86, 13),
        2.57,
        "2023-11-16 18:17:04",
        "2023-11-16 19:14:20",
    ),
}


@pytest.mark.parametrize("name", sorted(n for n, s in SOURCES.items() if s.shipped is not None))
def test_shipped_copy_is_byte_identical_to_the_original(name):
    source = SOURCES[name]
    raw = gzip.decompress(shipped_path(source).read_bytes())
    assert len(raw) == source.size_bytes
    assert hashlib.sha256(raw).hexdigest() == source.sha256


def test_provenance_and_license_are_shipped():
    data = shipped_path(SOURCES["azure_chat"]).parent
    text = (data.parent / "PROVENANCE.md").read_text()
    assert SOURCES["azure_chat"].sha256 in text and "Splitwise" in text
    assert "CC-BY 4.0" in (data / "LICENSE.md").read_text()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_trace_statistics(name):
    rows, n_in, n_out, rate, first, last = EXPECTED[name]
    df = traces.load(name)
    s = trace_stats(df)
    assert s.requests == rows
    assert (round(s.n_in.mean, 2), round(s.n_in.std, 2), s.n_in.median) == n_in[:3]
    if n_in[3] is not None:
        assert s.n_in.p99 == n_in[3]
    assert (round(s.n_out.mean, 2), round(s.n_out.std, 2), s.n_out.median) == n_out
    assert round(s.mean_rate_per_s, 2) == rate
    t0 = pd.Timestamp(df.attrs["t0"]).tz_localize(None)
    assert t0.round("s") == pd.Timestamp(first)
    assert (t0 + pd.Timedelta(seconds=s.span_s)).round("s") == pd.Timestamp(last)


def test_shipped_trace_columns_and_summary():
    df = traces.load("azure_chat")
    assert list(df.columns) == ["arrival_s", "n_in", "n_out"]
    assert str(df["arrival_s"].dtype) == "float64" and str(df["n_in"].dtype) == "int32"
    assert df["arrival_s"].iat[0] == 0.0 and df["arrival_s"].is_monotonic_increasing
    assert "19,366 rows read; nothing dropped or fixed" in df.attrs["load_summary"]

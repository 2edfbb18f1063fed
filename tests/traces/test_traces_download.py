"""Downloads, checksums, the offline message and the Parquet cache, all on file:// URLs."""

import hashlib
import shutil

import pytest

import traces
from traces import loader
from traces.download import DownloadError, ensure_local
from traces.sources import SOURCES, Source


def _source(path, sha256, rows=None, key="burstgpt_1", name="BurstGPT_1.csv"):
    return Source(key, name, "test", sha256=sha256, rows=rows, urls=(path.as_uri(),))


@pytest.fixture
def burst(fixtures):
    path = fixtures / "burstgpt_head.csv"
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_with_the_right_checksum(tmp_path, burst):
    path, sha = burst
    got = ensure_local(_source(path, sha), tmp_path / "cache", progress=False)
    assert got == tmp_path / "cache" / "BurstGPT_1.csv"
    assert got.read_bytes() == path.read_bytes()
    assert (tmp_path / "cache" / "BurstGPT_1.csv.sha256").read_text().startswith(sha)


def test_download_with_a_wrong_checksum_fails_and_keeps_nothing(tmp_path, burst):
    path, _ = burst
    with pytest.raises(ValueError, match="does not match the published 000"):
        ensure_local(_source(path, "0" * 64), tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_offline_error_says_where_to_put_the_file(tmp_path, burst):
    path, sha = burst
    with pytest.raises(DownloadError) as err:
        ensure_local(_source(tmp_path / "nowhere.csv", sha), tmp_path / "c", progress=False)
    assert f"put it at {tmp_path / 'c' / 'BurstGPT_1.csv'} (sha256 {sha})" in str(err.value)
    with pytest.raises(FileNotFoundError, match="downloads are switched off"):
        ensure_local(_source(path, sha), tmp_path / "c", allow_download=False)


def test_file_put_by_hand_is_checked(tmp_path, burst):
    path, sha = burst
    shutil.copy(path, tmp_path / "BurstGPT_1.csv")
    with pytest.raises(ValueError, match="delete it and download BurstGPT_1.csv again"):
        ensure_local(_source(path, "f" * 64), tmp_path, allow_download=False)
    assert ensure_local(_source(path, sha), tmp_path, allow_download=False).exists()


def test_named_trace_downloads_then_loads_from_the_parquet_cache(tmp_path, burst, monkeypatch):
    path, sha = burst
    monkeypatch.setitem(SOURCES, "burstgpt_1", _source(path, sha))
    first = traces.load("burstgpt", cache_dir=str(tmp_path))
    assert (tmp_path / "BurstGPT_1.parquet").exists() and len(first) == 8

    def no_parse(*_):
        raise AssertionError("parsed again instead of reading the Parquet cache")

    monkeypatch.setattr(loader, "parse_file", no_parse)
    second = traces.load("burstgpt", cache_dir=str(tmp_path), model="GPT-4")
    assert second.attrs["load_summary"].startswith("burstgpt (BurstGPT_1.csv): 10 rows read")
    assert len(second) == 2 and str(second["n_in"].dtype) == "int32"


def test_published_row_count_mismatch_is_reported(tmp_path, fixtures, monkeypatch):
    path = fixtures / "azure_2024_head.csv"
    src = _source(path, None, rows=99, key="azure_code_2024", name=path.name)
    monkeypatch.setitem(SOURCES, "azure_code_2024", src)
    df = traces.load("azure_code_2024", cache_dir=str(tmp_path))
    assert "row count 7 differs from the published 99" in df.attrs["load_summary"]
    assert (tmp_path / f"{path.name}.sha256").exists()

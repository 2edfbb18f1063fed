"""The shipped Mooncake traces, JSON-lines traces in their schema, and the `hash_ids` column."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

import traces
from traces.loader import read_cache, write_cache
from traces.parse import parse_file
from traces.sources import SOURCES, shipped_path
from traces.stats import trace_stats

ROOT = Path(__file__).resolve().parents[2]
# name: rows, share of prompt blocks that repeat an earlier one (issue #23's figures, %)
MOONCAKE = {"mooncake_conversation": (12_031, 36.6), "mooncake_synthetic": (3_993, 64.0)}


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _request(t_ms: int, n_in: int, ids: list[int], n_out: int = 10) -> dict:
    return {"timestamp": t_ms, "input_length": n_in, "output_length": n_out, "hash_ids": ids}


def test_provenance_and_license_are_shipped():
    folder = shipped_path(SOURCES["mooncake_conversation"]).parent
    provenance = (folder.parent / "PROVENANCE.md").read_text()
    for name in MOONCAKE:
        assert SOURCES[name].sha256 in provenance
    license_text = (folder / "LICENSE.md").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text and "Mooncake" in license_text


@pytest.mark.parametrize("name", sorted(MOONCAKE))
def test_shipped_trace_loads_with_its_rows_and_block_reuse(name):
    rows, reuse_pct = MOONCAKE[name]
    df = traces.load(name)
    assert list(df.columns) == ["arrival_s", "n_in", "n_out", "hash_ids"]
    assert len(df) == rows and df["arrival_s"].iat[0] == 0.0 and df["arrival_s"].is_monotonic_increasing
    blocks = trace_stats(df).blocks
    assert blocks is not None and abs(100 * blocks.repeated_share - reuse_pct) < 0.1
    assert f"{rows:,} rows read" in df.attrs["load_summary"]
    assert f"{reuse_pct:.1f} % of {blocks.blocks:,} prompt blocks repeat an earlier block" in df.attrs["load_summary"]
    counts = df["hash_ids"].list.len().to_numpy()
    assert (counts == -(-df["n_in"].to_numpy() // 512)).all()


def test_hash_ids_stay_with_their_requests_through_the_options():
    full = traces.load("mooncake_synthetic")
    rows: dict[tuple, set] = {}  # block list -> the (n_in, n_out) of the requests that have it
    for ids, n_in, n_out in zip(full["hash_ids"], full["n_in"], full["n_out"], strict=True):
        rows.setdefault(tuple(ids), set()).add((n_in, n_out))
    df = traces.load("mooncake_synthetic", start_s=100.0, duration_s=600.0, sample_frac=0.5, rate_scale=3.0,
                     max_requests=300, seed=7)  # fmt: skip
    assert len(df) == 300 and str(df["hash_ids"].dtype) == str(full["hash_ids"].dtype)
    kept = zip(df["hash_ids"], df["n_in"], df["n_out"], strict=True)
    assert all((n_in, n_out) in rows[tuple(ids)] for ids, n_in, n_out in kept)
    assert "first 300 of" in df.attrs["load_summary"] and "arrival rate x3" in df.attrs["load_summary"]


def test_block_reuse_counts_every_repeat_after_the_first(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [_request(0, 1024, [0, 1]), _request(5, 1500, [0, 1, 2]), _request(9, 10, [7])])
    blocks = trace_stats(traces.load(path)).blocks
    assert blocks is not None and (blocks.blocks, blocks.repeated) == (6, 2)


def test_a_jsonl_file_in_the_same_schema_loads_gzipped_or_not(tmp_path):
    records = [_request(2500, 1025, [4, 5, 6], 3), _request(1000, 600, [4, 8], 7), _request(1000, 512, [9])]
    for path in (_jsonl(tmp_path / "t.jsonl", records), tmp_path / "t.jsonl.gz"):
        if path.suffix == ".gz":
            path.write_bytes(gzip.compress((tmp_path / "t.jsonl").read_bytes()))
        df = traces.load(path)
        assert df["arrival_s"].tolist() == [0.0, 0.0, 1.5] and df["n_in"].tolist() == [600, 512, 1025]
        assert [list(ids) for ids in df["hash_ids"]] == [[4, 8], [9], [4, 5, 6]]
        assert "(mooncake format)" in df.attrs["load_summary"] and "sorted 1 out-of-order" in df.attrs["load_summary"]


def test_hash_ids_survive_the_parquet_cache(tmp_path):
    parsed = parse_file(_jsonl(tmp_path / "t.jsonl", [_request(0, 1024, [1, 2]), _request(3, 9, [1])]))
    write_cache(parsed, tmp_path / "t.parquet")
    cached = read_cache(tmp_path / "t.parquet")
    assert cached is not None and cached.fmt == "mooncake"
    assert [list(ids) for ids in cached.frame["hash_ids"]] == [[1, 2], [1]]
    assert cached.frame[["arrival_s", "n_in", "n_out"]].equals(parsed.frame[["arrival_s", "n_in", "n_out"]])


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"timestamp": 5, "input_length": 100, "output_length": 2}, r"missing key\(s\) \['hash_ids'\]"),
        (_request(5, 100, "0,1"), "'hash_ids' '0,1' is not a list of integers"),
        (_request(5, 100, [0, "x"]), r"'hash_ids' 'x' \(item 1\) is not a 64-bit integer block hash"),
        (_request(5, 100, [0, True]), r"'hash_ids' True \(item 1\) is not a 64-bit integer"),
        (_request(5, 1025, [0, 1, 2, 3]), r"'hash_ids' has 4 blocks, more than the 3 that input_length 1025 allows"),
        (_request(5, -3, []), "'input_length' -3.0 is a negative token count"),
        (_request(5, 100, [0], n_out=-1), "'output_length' -1.0 is a negative token count"),
        (_request(5, 100.5, [0]), "'input_length' 100.5 is not an integer token count"),
        (_request("soon", 100, [0]), "'timestamp' 'soon' is not a number"),
    ],
)
def test_each_bad_line_gives_one_error_naming_file_and_line(tmp_path, bad, message):
    path = _jsonl(tmp_path / "bad.jsonl", [_request(0, 512, [0]), _request(1, 512, [0]), bad])
    with pytest.raises(ValueError, match=f"bad.jsonl: line 3: {message}") as info:
        traces.load(path)
    assert "\n" not in str(info.value)


def test_a_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_request(0, 512, [0])) + "\n\n{oops\n")
    with pytest.raises(ValueError, match="bad.jsonl: line 3: not a JSON object"):
        traces.load(path)


def test_the_stats_command_prints_the_block_reuse():
    done = subprocess.run([sys.executable, "-m", "traces", "stats", "mooncake_synthetic"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "prefix blocks (512 tokens): 64.0 % of" in done.stdout


def test_bad_file_on_the_command_line_is_one_line(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [_request(0, 100, [0, 1])])
    done = subprocess.run([sys.executable, "-m", "traces", "stats", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {path}: line 1: 'hash_ids' has 2 blocks, more than the 1 that input_length 100 allows "
        "(ceil(input_length / 512))"
    ]

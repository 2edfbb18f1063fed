"""Synthetic prefix sharing: multi-turn conversations, a shared system prompt, and their `hash_ids`."""

import hashlib

import numpy as np
import pytest

import traces
from traces.cli import main
from traces.jsonl import HASH_IDS_DTYPE
from traces.stats import format_stats, trace_stats

FIXED = {"n_in": 512, "n_out": 128, "num_requests": 500, "seed": 7}
SEED = {"num_requests": 3000, "rate_per_s": 5.0, "seed": 5}


def _digest(df) -> str:
    h = hashlib.sha256(repr([(c, str(df[c].dtype)) for c in df.columns]).encode())
    for c in df.columns:
        h.update(np.ascontiguousarray(df[c].to_numpy()).tobytes())
    return h.hexdigest()[:16]


def _common(a, b) -> int:
    """Leading blocks two prompts share."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


def _turns(df):
    """(previous row, row) index pairs of consecutive turns of each conversation."""
    pairs = []
    for _, rows in df.groupby("conversation", sort=False):
        idx = rows.index.to_numpy()
        assert rows["turn"].tolist() == list(range(1, len(rows) + 1))  # in order, one each
        pairs += list(zip(idx[:-1], idx[1:], strict=True))
    return pairs


def test_defaults_are_the_trace_they_were():
    df = traces.load("synthetic", **FIXED)
    assert list(df.columns) == ["arrival_s", "n_in", "n_out"] and "hash_block_tokens" not in df.attrs
    assert _digest(df) == "90342dddcb99c60e"  # the frame before prefix sharing existed, byte for byte
    same = traces.load("synthetic", **FIXED, turns=1.0, shared_prefix_tokens=0, open_conversations=3,
                       hash_block_tokens=16)  # fmt: skip
    assert same.equals(df) and same.attrs == df.attrs
    drawn = traces.load("synthetic", num_requests=800, seed=2, sample_frac=0.5)
    assert drawn.equals(traces.load("synthetic", num_requests=800, seed=2, sample_frac=0.5, turns=1))


def test_prompts_grow_by_the_previous_prompt_its_output_and_a_new_message():
    messages = traces.load("synthetic", **SEED)  # same seed: the same arrivals, messages and outputs
    df = traces.load("synthetic", **SEED, turns=4, shared_prefix_tokens=300)
    assert list(df.columns) == ["arrival_s", "n_in", "n_out", "conversation", "turn", "hash_ids"]
    assert df["arrival_s"].equals(messages["arrival_s"]) and df["n_out"].equals(messages["n_out"])
    assert df["n_in"].dtype == np.int32 and df["turn"].dtype == np.int32
    n_in, n_out, new = df["n_in"].to_numpy(), df["n_out"].to_numpy(), messages["n_in"].to_numpy()
    first = df["turn"].to_numpy() == 1
    assert (n_in[first] == 300 + new[first]).all()
    pairs = _turns(df)
    assert len(pairs) == int((~first).sum()) > 2000
    for prev, row in pairs:
        assert n_in[row] == n_in[prev] + n_out[prev] + new[row]
    assert n_in.max() > messages["n_in"].max()  # prompts grow past the fitted trace's longest


def test_conversations_interleave_with_the_mean_turns_and_about_open_conversations_apart():
    df = traces.load("synthetic", num_requests=40_000, n_in=10, n_out=10, seed=1, turns=4, open_conversations=20)
    sizes = df.groupby("conversation").size()
    assert 3.8 < sizes.mean() < 4.1 and sizes.max() > 15  # geometric, cut short at the end
    gaps = np.array([row - prev for prev, row in _turns(df)])
    assert abs(gaps.mean() / 20 - 1) < 0.05 and (gaps > 1).mean() > 0.9  # interleaved with the others
    first = df.groupby("conversation").head(1)
    assert first["conversation"].tolist() == list(range(len(first)))  # numbered by first arrival


def test_a_turn_shares_exactly_the_full_blocks_of_the_previous_prompt():
    df = traces.load("synthetic", **SEED, turns=4, shared_prefix_tokens=1300)
    ids, n_in = list(df["hash_ids"]), df["n_in"].to_numpy()
    assert df["hash_ids"].dtype == HASH_IDS_DTYPE and df.attrs["hash_block_tokens"] == 512
    assert [len(x) for x in ids] == (-(-n_in // 512)).tolist()
    for prev, row in _turns(df):
        assert _common(ids[prev], ids[row]) == n_in[prev] // 512


def test_the_system_prompt_blocks_are_every_prompts_and_nothing_else_is_shared_across_conversations():
    df = traces.load("synthetic", **SEED, turns=3, shared_prefix_tokens=1300)
    ids, conv = list(df["hash_ids"]), df["conversation"].to_numpy()
    system = ids[0][:2]  # 1300 tokens: two full blocks, the third mixes in the conversation
    assert all(list(x[:2]) == list(system) for x in ids)
    owner: dict[int, int] = {}  # every later block id belongs to one conversation
    for blocks, c in zip(ids, conv, strict=True):
        for h in blocks[2:]:
            assert owner.setdefault(int(h), int(c)) == c
    flat = np.concatenate([np.asarray(x) for x in ids])
    last = [x[-1] for x, n in zip(ids, df["n_in"], strict=True) if n % 512]
    counts = dict(zip(*np.unique(flat, return_counts=True), strict=True))
    assert last and all(counts[h] == 1 for h in last)  # a partial last block is its prompt's own


def test_a_shared_prefix_alone_makes_single_turn_requests_with_hash_ids():
    df = traces.load("synthetic", **FIXED, shared_prefix_tokens=1024)
    assert (df["turn"] == 1).all() and df["conversation"].is_unique
    assert (df["n_in"] == 1536).all()
    blocks = trace_stats(df).blocks
    assert blocks is not None and (blocks.blocks, blocks.repeated) == (3 * 500, 2 * 499)


def test_seeded():
    options = {**SEED, "turns": 4, "shared_prefix_tokens": 700}
    df = traces.load("synthetic", **options)
    assert df.equals(traces.load("synthetic", **options))
    other = traces.load("synthetic", **{**options, "seed": 6})
    assert not df["conversation"].equals(other["conversation"])


def test_block_reuse_rises_with_the_turns():
    assert trace_stats(traces.load("synthetic", **SEED)).blocks is None
    shares = []
    for turns in (1.5, 2, 4, 8):
        blocks = trace_stats(traces.load("synthetic", **SEED, turns=turns)).blocks
        assert blocks is not None
        shares.append(blocks.repeated_share)
    assert 0 < shares[0] and shares == sorted(shares) and shares[-1] > 0.7


def test_options_after_generation_keep_the_blocks_and_the_block_size():
    full = traces.load("synthetic", **SEED, turns=4, shared_prefix_tokens=600, hash_block_tokens=256)
    assert [len(x) for x in full["hash_ids"]] == (-(-full["n_in"].to_numpy() // 256)).tolist()
    rows = {(c, t): (n, list(x)) for c, t, n, x in zip(full["conversation"], full["turn"], full["n_in"],
                                                         full["hash_ids"], strict=True)}  # fmt: skip
    df = traces.load("synthetic", **SEED, turns=4, shared_prefix_tokens=600, hash_block_tokens=256,
                     start_s=20.0, duration_s=400.0, sample_frac=0.5, rate_scale=3.0, max_requests=300)  # fmt: skip
    assert len(df) == 300 and df["hash_ids"].dtype == HASH_IDS_DTYPE
    assert df.attrs["hash_block_tokens"] == 256 and "first 300 of" in df.attrs["load_summary"]
    for c, t, n, x in zip(df["conversation"], df["turn"], df["n_in"], df["hash_ids"], strict=True):
        assert rows[(c, t)] == (n, list(x))
    assert "prefix blocks (256 tokens)" in format_stats("synthetic", trace_stats(df))


def test_the_stats_command_takes_options_and_prints_the_block_reuse(capsys, tmp_path):
    assert main(["stats", "synthetic", "turns=4", "--cache-dir", str(tmp_path), "shared_prefix_tokens=1000"]) == 0
    out = capsys.readouterr().out
    assert "conversations of 4 turns on average, 64 open, 1,000-token shared prefix" in out
    assert "prefix blocks (512 tokens): " in out and "% of" in out


@pytest.mark.parametrize("option", ["turn=4", "turns", "name=azure_chat"])
def test_the_stats_command_names_a_bad_option(option, capsys):
    assert main(["stats", "synthetic", option]) == 1
    assert f"trace option {option!r}: expected KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("turns", 0.0, "a number >= 1"),
        ("shared_prefix_tokens", -5, "an integer >= 0"),
        ("hash_block_tokens", 0, "an integer >= 1"),
        ("open_conversations", 0, "an integer >= 1"),
    ],
)
def test_bad_prefix_options_are_named(key, value, expected):
    with pytest.raises(ValueError, match=f"trace config: {key}={value!r} is invalid, expected {expected}"):
        traces.load("synthetic", **{key: value})

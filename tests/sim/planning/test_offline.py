"""Offline estimate (Fernandez et al. 2025) and ideal FLOPs bound: hand-computed cases and azure_chat."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from oracle import features as F
from oracle.arch import load_gpu, load_model
from oracle.model import MemorySpec, Oracle
from sim.planning import offline
from sim.planning.offline import (
    WIDE_OUT_TOKENS,
    batch_sizes,
    ideal_lower_bound,
    offline_estimate,
    pow2_buckets,
    sequence_flops,
    specs_for,
    windowed_pairs,
)

pytestmark = pytest.mark.filterwarnings("ignore::oracle.model.OracleRangeWarning")


def toy_oracle(memory: MemorySpec | None = None) -> Oracle:
    """10 J per step plus 1 J per decoding sequence; 1 ms per step plus 0.5 ms per decoding sequence."""
    return Oracle(
        name="toy",
        model="toy",
        gpu="toy",
        backend="test",
        energy_coef_j=[10.0, 1.0, 0, 0, 0, 0],
        time_coef_s=[1e-3, 5e-4, 0, 0, 0, 0],
        idle_power_w=0.0,
        memory=memory,
    )


def frame(pairs: list[tuple[int, int]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["n_in", "n_out"])


def test_two_buckets_by_hand() -> None:
    # Bucket (64, 8): N=3, B=2: one lockstep batch = 8 steps × 10 J + 2 seqs × 7 decode steps × 1 J = 94 J;
    #   N/B = 1.5 batches → 141 J.  Time: 8 × 1 ms + 14 × 0.5 ms = 15 ms; × 1.5 = 22.5 ms.
    # Bucket (128, 16): N=1, B=2: 16 × 10 + 2 × 15 = 190 J; N/B = 0.5 → 95 J.
    #   Time: 16 ms + 15 ms = 31 ms; × 0.5 = 15.5 ms.
    reqs = frame([(60, 8), (64, 7), (70, 9), (128, 16)])
    est = offline_estimate(reqs, toy_oracle(), max_batch=2, kv_capacity_tokens=10_000)
    assert est.energy_j == pytest.approx(141.0 + 95.0)
    assert est.busy_s == pytest.approx(0.0225 + 0.0155)
    assert est.buckets[["n_in", "n_out", "requests", "batch"]].values.tolist() == [[64, 8, 3, 2], [128, 16, 1, 2]]
    assert est.buckets["batch_energy_j"].tolist() == pytest.approx([94.0, 190.0])
    assert (est.requests, est.output_tokens, est.clamped_in, est.clamped_out) == (4, 40, 0, 0)
    assert est.j_per_output_token == pytest.approx(236.0 / 40)


def test_batch_energy_is_the_lockstep_step_sum() -> None:
    o = Oracle.load("llama-3.1-8b_h100")
    b = 64
    assert b * o.energy(1024, 256, b) == pytest.approx(o.step_energy(F.lockstep_features(1024, 256, b)))


def test_kv_capacity_limits_the_batch() -> None:
    assert batch_sizes([64, 128], [8, 16], max_batch=256, kv_capacity_tokens=150).tolist() == [2, 1]
    assert batch_sizes([64], [8], max_batch=1, kv_capacity_tokens=10**6).tolist() == [1]
    with pytest.raises(ValueError, match="does not fit kv_capacity_tokens=100"):
        batch_sizes([64, 128], [8, 16], max_batch=4, kv_capacity_tokens=100)


def test_kv_capacity_from_oracle_memory_or_error() -> None:
    mem = MemorySpec(weight_bytes=0.0, kv_bytes_per_token=1.0, gpu_memory_bytes=160.0)  # 0.9 × 160 = 144 tokens
    est = offline_estimate(frame([(64, 8)] * 4), toy_oracle(mem), max_batch=8)
    assert est.kv_capacity_tokens == 144 and est.buckets["batch"].tolist() == [2]
    with pytest.raises(ValueError, match="no memory spec: pass kv_capacity_tokens"):
        offline_estimate(frame([(64, 8)]), toy_oracle(), max_batch=8)
    # the sampler's memory for a full batch (4 bytes per sequence here) comes out of the KV cache
    sampled = MemorySpec(weight_bytes=0.0, kv_bytes_per_token=1.0, gpu_memory_bytes=160.0, sampler_bytes_per_seq=4.0)
    assert offline_estimate(frame([(64, 8)] * 4), toy_oracle(sampled), max_batch=8).kv_capacity_tokens == 144 - 32
    with pytest.raises(ValueError, match="sampler's memory for a batch of 36 leave no KV cache"):
        offline_estimate(frame([(64, 8)]), toy_oracle(sampled), max_batch=36)


def test_pow2_bucket_edges_and_clamping() -> None:
    # nearest in log2: 45 → 32 (log2 5.49), 46 → 64 (5.52); 9000 → 8192; 12000 → 16384 → clamped.
    lengths = [1, 20, 32, 45, 46, 8192, 9000, 12000, 20000]
    bucket, clamped = pow2_buckets(lengths, 32, 8192)
    assert bucket.tolist() == [32, 32, 32, 32, 64, 8192, 8192, 8192, 8192]
    assert clamped == 4
    with pytest.raises(ValueError, match="≥ 1 token"):
        pow2_buckets([0, 5], 8, 512)


def test_wide_output_buckets_keep_long_outputs() -> None:
    reqs = frame([(64, 1000)])
    paper = offline_estimate(reqs, toy_oracle(), 4, 10**6)
    wide = offline_estimate(reqs, toy_oracle(), 4, 10**6, out_tokens=WIDE_OUT_TOKENS)
    assert (paper.clamped_out, paper.buckets["n_out"].item()) == (1, 512)
    assert (wide.clamped_out, wide.buckets["n_out"].item()) == (0, 1024)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_batch": 0}, "max_batch"),
        ({"kv_capacity_tokens": 0}, "kv_capacity_tokens"),
        ({"out_tokens": (8, 500)}, "out_tokens"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    args = {"max_batch": 4, "kv_capacity_tokens": 10**6} | kwargs
    with pytest.raises(ValueError, match=match):
        offline_estimate(frame([(64, 8)]), toy_oracle(), **args)


def test_missing_columns_and_empty_trace() -> None:
    with pytest.raises(ValueError, match="n_out"):
        offline_estimate(pd.DataFrame({"n_in": [1]}), toy_oracle(), 4, 100)
    with pytest.raises(ValueError, match="empty"):
        offline_estimate(frame([]), toy_oracle(), 4, 100)


def test_sequence_flops_and_window_by_hand() -> None:
    m = load_model("llama-3.1-8b")
    # 16 tokens: 2 · weight_params · 16 + 4 · 32 layers · 32 heads · 128 · (16 · 17 / 2) pairs
    expected = 2 * m.weight_params * 16 + 4 * 32 * 32 * 128 * 136
    assert sequence_flops(10, 6, m).item() == pytest.approx(expected)
    assert windowed_pairs([2, 5], 3).tolist() == [3.0, 12.0]  # 1+2; 1+2+3+3+3


def test_ideal_bound_by_hand() -> None:
    m, g = load_model("llama-3.1-8b"), load_gpu("h100")
    reqs = frame([(10, 6), (100, 28)])
    flops = sequence_flops(10, 6, m) + sequence_flops(100, 28, m)
    bound = ideal_lower_bound(reqs, m, g)
    assert bound.flops == pytest.approx(flops)
    assert bound.energy_j == pytest.approx(flops / 989.5e12 * 700.0)
    assert bound.j_per_output_token == pytest.approx(bound.energy_j / 34)


def test_specs_for_shipped_oracle_and_unknown() -> None:
    m, g = specs_for(Oracle.load("llama-3.1-8b_h100"))
    assert (m.name, g.name) == ("llama-3.1-8b", "h100")
    with pytest.raises(LookupError, match="toy"):
        specs_for(toy_oracle())


def test_bound_below_estimate_on_azure_chat() -> None:
    traces = pytest.importorskip("traces")
    try:
        reqs = traces.load("azure_chat")
    except Exception as e:  # noqa: BLE001 - no network and no cached copy
        pytest.skip(f"azure_chat trace not available: {e}")
    oracle = Oracle.load("llama-3.1-8b_h100")
    est = offline_estimate(reqs, oracle, max_batch=256)
    bound = ideal_lower_bound(reqs, *specs_for(oracle))
    assert 0 < bound.energy_j < est.energy_j
    assert est.requests == len(reqs) and int(est.buckets["requests"].sum()) == len(reqs)
    assert np.all(est.buckets["batch"] <= 256)


def test_cli_prints_estimate_bound_and_j_per_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("traces.load", lambda name: frame([(1024, 128)] * 300))
    offline.main(["--trace", "fake", "--oracle", "llama-3.1-8b_h100", "--max-batch", "256"])
    out = capsys.readouterr().out
    assert "offline estimate" in out and "ideal bound" in out and "J/output token" in out
    assert "300 requests" in out


def test_cli_says_what_was_wrong_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("traces.load", lambda name: frame([(1024, 128)] * 3))
    with pytest.raises(SystemExit, match="error: oracle 'llama-3.1-8b_h100'.*lower --max-batch"):
        offline.main(["--trace", "fake", "--oracle", "llama-3.1-8b_h100", "--max-batch", "60000"])

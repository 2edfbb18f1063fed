"""Offline workload energy (Fernandez et al. 2025) and the ideal FLOPs bound, beside the simulator.

Offline estimate: bin every request to power-of-two (I, O) buckets, run each bucket in full
lockstep batches of the largest size B(I, O) that fits (max batch, KV cache), and add up
E_total = Σ N(I,O) / B(I,O) · E_batch(I,O), with E_batch = B · oracle.energy(I, O, B). Batches
may be fractional, as in the paper's formula. No arrivals, no queueing, no idle time.

Ideal bound: FLOPs of the workload at the GPU's dense peak, drawing its full TDP:
E = FLOPs · TDP / peak FLOP/s. It ignores memory traffic and static power, so it sits far below.

    python -m sim.planning.offline --trace azure_chat --oracle llama-3.1-8b_h100 --max-batch 256
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from oracle import features as F
from oracle.arch import GpuSpec, ModelSpec, find_gpu, find_model
from oracle.model import KV_UTILIZATION, Oracle
from sim.console.notices import show_warnings_once

PAPER_IN_TOKENS = (32, 8192)
"""Input buckets of Fernandez et al.: 32, 64, …, 8192 tokens."""
PAPER_OUT_TOKENS = (8, 512)
"""Output buckets of Fernandez et al.: 8, 16, …, 512 tokens."""
WIDE_OUT_TOKENS = (8, 4096)
"""Wider output buckets: Azure chat outputs reach 1000 tokens, which the paper's range clamps to 512."""


@dataclass(frozen=True)
class OfflineEstimate:
    """Offline energy (J) and busy time (s) of a trace; `buckets` has one row per (I, O) bucket.

    clamped_in / clamped_out: requests whose nearest power-of-two bucket lay outside the range and
    were moved to its end bucket. output_tokens: the trace's own (unbucketed) output tokens.
    """

    energy_j: float
    busy_s: float
    requests: int
    output_tokens: int
    clamped_in: int
    clamped_out: int
    max_batch: int
    kv_capacity_tokens: int
    buckets: pd.DataFrame = field(compare=False, repr=False)

    @property
    def j_per_output_token(self) -> float:
        """Energy per output token of the trace (J/token)."""
        return self.energy_j / self.output_tokens


@dataclass(frozen=True)
class IdealBound:
    """FLOPs of a trace and the energy (J) and time (s) at peak FLOP/s and full TDP."""

    flops: float
    energy_j: float
    time_s: float
    output_tokens: int

    @property
    def j_per_output_token(self) -> float:
        """Energy per output token (J/token)."""
        return self.energy_j / self.output_tokens


def pow2_buckets(lengths: ArrayLike, lo: int, hi: int) -> tuple[np.ndarray, int]:
    """Nearest power of two (in log2) of each length, clamped to [lo, hi]; and how many were clamped."""
    x = np.asarray(lengths, dtype=float)
    if x.size and (not np.all(np.isfinite(x)) or x.min() < 1):
        raise ValueError(f"lengths must be finite and ≥ 1 token, got min {np.nanmin(x):g}")
    nearest = 2.0 ** np.round(np.log2(np.maximum(x, 1.0)))
    bucket = np.clip(nearest, lo, hi)
    return bucket, int(np.count_nonzero(bucket != nearest))


def batch_sizes(n_in: ArrayLike, n_out: ArrayLike, max_batch: int, kv_capacity_tokens: int) -> np.ndarray:
    """Largest B ≤ max_batch whose KV need B·(I + O) fits kv_capacity_tokens; error if B would be 0."""
    need = np.asarray(n_in, dtype=np.int64) + np.asarray(n_out, dtype=np.int64)
    b = np.minimum(max_batch, kv_capacity_tokens // need)
    if np.any(b < 1):
        worst = int(need.max())
        raise ValueError(f"a bucket of {worst} tokens does not fit kv_capacity_tokens={kv_capacity_tokens}")
    return b


def offline_estimate(
    requests: pd.DataFrame,
    oracle: Oracle,
    max_batch: int,
    kv_capacity_tokens: int | None = None,
    in_tokens: tuple[int, int] = PAPER_IN_TOKENS,
    out_tokens: tuple[int, int] = PAPER_OUT_TOKENS,
) -> OfflineEstimate:
    """E_total = Σ N/B · B · oracle.energy(I, O, B) over power-of-two buckets (see module docstring).

    requests: columns n_in, n_out (tokens). kv_capacity_tokens: None takes the oracle's memory spec.
    in_tokens / out_tokens: bucket ranges (powers of two); WIDE_OUT_TOKENS keeps long outputs.
    """
    n_in, n_out = _lengths(requests)
    if max_batch < 1:
        raise ValueError(f"max_batch must be ≥ 1, got {max_batch}")
    kv = _kv_capacity(oracle, kv_capacity_tokens, max_batch)
    i_bucket, clamped_in = pow2_buckets(n_in, *_pow2_range(in_tokens, "in_tokens"))
    o_bucket, clamped_out = pow2_buckets(n_out, *_pow2_range(out_tokens, "out_tokens"))
    table = bucket_table(i_bucket, o_bucket, oracle, max_batch, kv)
    return OfflineEstimate(
        energy_j=float(table["energy_j"].sum()),
        busy_s=float(table["time_s"].sum()),
        requests=int(n_in.size),
        output_tokens=int(n_out.sum()),
        clamped_in=clamped_in,
        clamped_out=clamped_out,
        max_batch=int(max_batch),
        kv_capacity_tokens=kv,
        buckets=table,
    )


def bucket_table(
    i_bucket: np.ndarray, o_bucket: np.ndarray, oracle: Oracle, max_batch: int, kv_capacity_tokens: int
) -> pd.DataFrame:
    """Per bucket: requests N, batch B, batch energy (J) and time (s), and N/B times each."""
    counts = pd.DataFrame({"n_in": i_bucket.astype(np.int64), "n_out": o_bucket.astype(np.int64)})
    t = counts.value_counts().rename("requests").sort_index().reset_index()
    t["batch"] = batch_sizes(t["n_in"], t["n_out"], max_batch, kv_capacity_tokens)
    t["batches"] = t["requests"] / t["batch"]
    t["batch_energy_j"] = t["batch"] * oracle.energy(t["n_in"], t["n_out"], t["batch"])
    t["batch_time_s"] = oracle.time(t["n_in"], t["n_out"], t["batch"])  # a lockstep batch's duration
    t["energy_j"] = t["batches"] * t["batch_energy_j"]
    t["time_s"] = t["batches"] * t["batch_time_s"]
    return t


def sequence_flops(n_in: ArrayLike, n_out: ArrayLike, model: ModelSpec) -> np.ndarray:
    """FLOPs of whole sequences: 2·weight_params per token plus causal attention over n_in + n_out.

    Sliding-window layers attend to at most `sliding_window` keys per query.
    """
    n = np.asarray(n_in, dtype=float) + np.asarray(n_out, dtype=float)
    dense = 2.0 * model.weight_params * n
    local = model.local_layers if model.sliding_window else 0
    attn = model.attn_flops_per_pair(model.attn_layers - local) * F.attn_pairs(n)
    if local and model.sliding_window:
        attn = attn + model.attn_flops_per_pair(local) * np.asarray(windowed_pairs(n, model.sliding_window))
    return dense + attn


def windowed_pairs(n_tokens: ArrayLike, window: int) -> np.ndarray:
    """Causal (query, key) pairs of n tokens when each query sees at most `window` keys."""
    n = np.asarray(n_tokens, dtype=float)
    w = float(window)
    return np.where(n <= w, F.attn_pairs(n), F.attn_pairs(w) + (n - w) * w)


def ideal_lower_bound(requests: pd.DataFrame, model_spec: ModelSpec, gpu_spec: GpuSpec) -> IdealBound:
    """FLOPs × TDP / peak FLOP/s of every request (dense bf16 peak, power limit as TDP)."""
    n_in, n_out = _lengths(requests)
    flops = float(sequence_flops(n_in, n_out, model_spec).sum())
    time_s = flops / gpu_spec.peak_flops
    return IdealBound(
        flops=flops, energy_j=time_s * gpu_spec.power_limit_w, time_s=time_s, output_tokens=int(n_out.sum())
    )


def specs_for(oracle: Oracle) -> tuple[ModelSpec, GpuSpec]:
    """The architecture and GPU datasheet behind an oracle (from `oracle/data/models`, `oracle/data/gpus`)."""
    model, gpu = find_model(oracle.model), find_gpu(oracle.gpu)
    if model is None:
        raise LookupError(f"oracle {oracle.name!r}: no oracle/data/models spec matches model {oracle.model!r}")
    if gpu is None:
        raise LookupError(f"oracle {oracle.name!r}: no oracle/data/gpus spec matches gpu {oracle.gpu!r}")
    return model, gpu


def _lengths(requests: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("n_in", "n_out") if c not in requests.columns]
    if missing:
        raise ValueError(f"requests lack column(s) {missing}; have {list(requests.columns)}")
    if requests.empty:
        raise ValueError("requests is empty: nothing to estimate")
    return requests["n_in"].to_numpy(np.int64), requests["n_out"].to_numpy(np.int64)


def _kv_capacity(oracle: Oracle, kv_capacity_tokens: int | None, max_batch: int) -> int:
    if kv_capacity_tokens is not None:
        if kv_capacity_tokens < 1:
            raise ValueError(f"kv_capacity_tokens must be ≥ 1, got {kv_capacity_tokens}")
        return int(kv_capacity_tokens)
    if oracle.memory is None:
        raise ValueError(f"oracle {oracle.name!r} has no memory spec: pass kv_capacity_tokens")
    kv = oracle.memory.kv_capacity_tokens(max_seqs=max_batch)
    if kv < 1:
        raise ValueError(
            f"oracle {oracle.name!r}: its weights and the sampler's memory for a batch of {max_batch} leave no "
            f"KV cache in {KV_UTILIZATION:g} of its GPU memory: lower --max-batch or pass --kv-capacity-tokens"
        )
    return kv


def _pow2_range(bounds: tuple[int, int], name: str) -> tuple[int, int]:
    lo, hi = (int(b) for b in bounds)
    if not (1 <= lo <= hi) or any(b & (b - 1) for b in (lo, hi)):
        raise ValueError(f"{name} must be two powers of two lo ≤ hi, got {bounds}")
    return lo, hi


def main(argv: Sequence[str] | None = None) -> None:
    """Print the offline estimate, the ideal bound and J per output token for one trace and oracle."""
    args = _parser().parse_args(argv)
    show_warnings_once()
    import traces

    requests = traces.load(args.trace)
    oracle = Oracle.load(args.oracle)
    try:
        est = offline_estimate(
            requests, oracle, args.max_batch, args.kv_capacity_tokens, out_tokens=(PAPER_OUT_TOKENS[0], args.out_max)
        )
    except ValueError as e:
        sys.exit(f"error: {e}")
    bound = ideal_lower_bound(requests, *specs_for(oracle))
    print(_report(args.trace, oracle.name, est, bound))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.planning.offline", description=__doc__.splitlines()[0])
    p.add_argument("--trace", default="azure_chat", help="trace name or file (traces.load)")
    p.add_argument("--oracle", default="llama-3.1-8b_h100", help="shipped oracle name or JSON path")
    p.add_argument("--max-batch", type=int, default=256, help="largest batch (sequences)")
    p.add_argument("--kv-capacity-tokens", type=int, default=None, help="KV cache size (default: oracle memory)")
    p.add_argument(
        "--out-max",
        type=int,
        default=PAPER_OUT_TOKENS[1],
        help="largest output bucket (paper: 512; 4096 keeps Azure chat's long outputs)",
    )
    return p


def _report(trace: str, oracle: str, est: OfflineEstimate, bound: IdealBound) -> str:
    return "\n".join(
        [
            f"trace {trace}: {est.requests:,} requests, {est.output_tokens:,} output tokens; oracle {oracle}",
            f"buckets: {len(est.buckets)} (clamped: {est.clamped_in} inputs, {est.clamped_out} outputs); "
            f"max batch {est.max_batch}, KV capacity {est.kv_capacity_tokens:,} tokens",
            f"offline estimate: {est.energy_j / 1e6:10.3f} MJ  {est.j_per_output_token:8.4f} J/output token  "
            f"busy {est.busy_s:,.0f} s",
            f"ideal bound:      {bound.energy_j / 1e6:10.3f} MJ  {bound.j_per_output_token:8.4f} J/output token  "
            f"({bound.flops:.3g} FLOPs, {bound.time_s:,.0f} s at peak)",
            f"estimate / bound: {est.energy_j / bound.energy_j:.2f}x",
        ]
    )


if __name__ == "__main__":
    main()

"""Step features of a serving iteration, and their closed-form sums over lockstep runs.

A step decodes one token for every running sequence and may prefill prompt tokens. Its time (s)
and energy (J) are linear in the feature vector

    x = [const, decode_seqs, decode_ctx, prefill_seqs, prefill_tokens, prefill_attn]

- const: 1 per step (weights read once, static power over the step; shared by the batch).
- decode_seqs: sequences decoding one token in this step.
- decode_ctx: sum of their context lengths (tokens of KV cache each one reads, itself included).
- prefill_seqs: sequences whose prompt (or a chunk of it) is processed in this step.
- prefill_tokens: prompt tokens processed in this step.
- prefill_attn: causal attention pairs of those tokens: a chunk of c tokens after p cached ones
  has c·p + c·(c+1)/2 pairs, so chunked and unchunked prefill of a prompt cost the same.

Convention (as in TensorRT-LLM and vLLM): the prefill step emits a request's first output token,
so a request with n_out output tokens takes one prefill step and n_out − 1 decode steps; decode
step k (k = 1 … n_out − 1) reads a context of n_in + k tokens.
"""

from __future__ import annotations

from typing import Final, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

FEATURES: Final = (
    "const",
    "decode_seqs",
    "decode_ctx",
    "prefill_seqs",
    "prefill_tokens",
    "prefill_attn",
)
N_FEATURES: Final = len(FEATURES)
CONST, DECODE_SEQS, DECODE_CTX, PREFILL_SEQS, PREFILL_TOKENS, PREFILL_ATTN = range(N_FEATURES)

Array = NDArray[np.float64]


class StepCoef(NamedTuple):
    """One coefficient per step feature, by name (s or J per feature unit).

    A plain-float tuple so that the engine's inner loop reads `c.decode_ctx` as fast as `c[2]`.
    """

    const: float
    decode_seqs: float
    decode_ctx: float
    prefill_seqs: float
    prefill_tokens: float
    prefill_attn: float

    @classmethod
    def of(cls, values: ArrayLike) -> StepCoef:
        """From a length-6 vector ordered as `FEATURES`."""
        v = np.asarray(values, dtype=float).reshape(-1)
        if v.size != N_FEATURES:
            raise ValueError(f"step coefficients need {N_FEATURES} values ({', '.join(FEATURES)}), got {v.size}")
        return cls(*(float(x) for x in v))


def attn_pairs(n_tokens: ArrayLike, past: ArrayLike = 0) -> Array:
    """Causal attention pairs (query, key) of n_tokens new tokens after `past` cached ones."""
    n = np.asarray(n_tokens, dtype=float)
    return n * np.asarray(past, dtype=float) + n * (n + 1.0) / 2.0


def step_features(
    decode_seqs: ArrayLike = 0,
    decode_ctx: ArrayLike = 0,
    prefill_seqs: ArrayLike = 0,
    prefill_tokens: ArrayLike = 0,
    prefill_attn: ArrayLike = 0,
) -> Array:
    """Feature vectors (shape (..., 6)) of steps; arguments broadcast against each other."""
    parts = np.broadcast_arrays(
        np.ones_like(np.asarray(decode_seqs, dtype=float)),
        *(np.asarray(a, dtype=float) for a in (decode_seqs, decode_ctx, prefill_seqs, prefill_tokens, prefill_attn)),
    )
    return np.stack(parts, axis=-1)


def lockstep_features(n_in: ArrayLike, n_out: ArrayLike, batch: ArrayLike = 1) -> Array:
    """Summed step features of one batch of `batch` identical requests run in lockstep.

    One prefill step of batch·n_in tokens, then n_out − 1 decode steps of `batch` sequences.
    """
    n_in, n_out, b = (np.asarray(a, dtype=float) for a in np.broadcast_arrays(n_in, n_out, batch))
    k = n_out - 1.0
    return np.stack(
        [
            n_out,
            b * k,
            b * (k * n_in + k * n_out / 2.0),
            b,
            b * n_in,
            b * attn_pairs(n_in),
        ],
        axis=-1,
    )


def run_features(n_in: ArrayLike, n_out: ArrayLike, batch_size: ArrayLike, num_requests: ArrayLike) -> Array:
    """Summed step features of a measured run: num_requests requests in static batches.

    Full batches of `batch_size` then one remainder batch, each in lockstep (the shape of a
    calibration run with identical requests).
    """
    n_in, n_out, cap, num = (
        np.asarray(a, dtype=float) for a in np.broadcast_arrays(n_in, n_out, batch_size, num_requests)
    )
    cap = np.minimum(cap, num)
    full = np.floor(num / cap)
    rest = num - full * cap
    out = full[..., None] * lockstep_features(n_in, n_out, cap)
    return out + np.where(rest[..., None] > 0, lockstep_features(n_in, n_out, np.maximum(rest, 1.0)), 0.0)


def theta_from_coef(coef: ArrayLike, batch: ArrayLike = 1) -> Array:
    """θ1…θ6 of the per-request polynomial for B requests in lockstep, from step coefficients.

    E = θ1·n_in² + θ2·n_in·n_out + θ3·n_in + θ4·n_out² + θ5 + θ6·n_out per request, where
    the shared per-step cost c0 is split equally between the B requests. Shape (..., 6).
    θ3, θ5 and θ6 may be negative for unusual coefficients (they are differences), see the
    module docstring for the step convention that produces them.
    """
    c = np.asarray(coef, dtype=float)
    b = np.asarray(batch, dtype=float)
    c0, c1, c2, c3, c4, c5 = (c[..., i] for i in range(N_FEATURES))
    return np.stack(
        np.broadcast_arrays(
            c5 / 2.0,
            c2,
            c4 + c5 / 2.0 - c2,
            c2 / 2.0,
            c3 - c1,
            c0 / b + c1 - c2 / 2.0,
        ),
        axis=-1,
    )


def polynomial(theta: ArrayLike, n_in: ArrayLike, n_out: ArrayLike) -> Array:
    """Evaluate θ1·n_in² + θ2·n_in·n_out + θ3·n_in + θ4·n_out² + θ5 + θ6·n_out."""
    t = np.asarray(theta, dtype=float)
    i = np.asarray(n_in, dtype=float)
    o = np.asarray(n_out, dtype=float)
    return t[..., 0] * i * i + t[..., 1] * i * o + t[..., 2] * i + t[..., 3] * o * o + t[..., 4] + t[..., 5] * o


def optimal_output(theta: ArrayLike, n_in: ArrayLike) -> Array:
    """n_out* = sqrt((θ1·n_in² + θ3·n_in + θ5) / θ4): the output length that minimises E / n_out.

    Infinite where θ4 = 0 (no growth of per-token cost with length); at least 1 token.
    """
    t = np.asarray(theta, dtype=float)
    i = np.asarray(n_in, dtype=float)
    fixed = np.maximum(t[..., 0] * i * i + t[..., 2] * i + t[..., 4], 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.sqrt(fixed / t[..., 3])
    n = np.where(t[..., 3] > 0, n, np.inf)
    return np.maximum(n, 1.0)

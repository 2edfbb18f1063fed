"""Energy and time math of serving steps, as pure functions (no SimPy, no state).

A step's time (s) and energy (J) are linear in its features (`oracle.features.FEATURES`):
`[const, decode_seqs, decode_ctx, prefill_seqs, prefill_tokens, prefill_attn]`. Between two
events that change the batch, B decoding sequences advance together and their context sum grows
by B per step, so the time and energy of k steps are arithmetic series (`span`). The per-sequence
part of a request's energy depends only on its own lengths (`sequence_energy_j`); the shared
`const` part is split equally between the sequences of each step, which the engine tracks as a
running sum of 1/(sequences in the step) (`share`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from oracle.model import Oracle
from sim.config import ConfigError

Array = NDArray[np.float64]


@dataclass(frozen=True)
class StepCosts:
    """Step coefficients of one (model, GPU): s and J per unit of each feature, idle power (W)."""

    time_s: tuple[float, float, float, float, float, float]
    energy_j: tuple[float, float, float, float, float, float]
    idle_power_w: float

    @classmethod
    def from_oracle(cls, oracle: Oracle) -> StepCosts:
        """Plain-float copy of an oracle's step model (fast to read in the engine's loop)."""
        t = tuple(float(v) for v in oracle.time_coef_s)
        e = tuple(float(v) for v in oracle.energy_coef_j)
        return cls(t, e, float(oracle.idle_power_w))  # type: ignore[arg-type]


def span(coef: tuple[float, ...], batch: int, ctx_sum: int, steps: int) -> float:
    """Time (s) or energy (J) of `steps` decode steps of `batch` sequences.

    `ctx_sum` is the sum of their contexts in the first step; it grows by `batch` per step:
    Σ_{j<k} (c0 + c1·B + c2·(S + j·B)) = k·(c0 + c1·B + c2·S) + c2·B·k(k−1)/2.
    """
    c0, c1, c2 = coef[0], coef[1], coef[2]
    return steps * (c0 + c1 * batch + c2 * ctx_sum) + c2 * batch * steps * (steps - 1) * 0.5


def steps_to_reach(coef_s: tuple[float, ...], batch: int, ctx_sum: int, dt_s: float) -> int:
    """Smallest k ≥ 1 whose decode span time `span(coef_s, batch, ctx_sum, k)` is ≥ dt_s (s).

    Solves the quadratic C/2·k² + (A − C/2)·k = dt with A the first step's time and C = c2·B,
    then corrects the rounding with the exact series.
    """
    if dt_s <= 0.0:
        return 1
    a = coef_s[0] + coef_s[1] * batch + coef_s[2] * ctx_sum
    c = coef_s[2] * batch
    if c > 0.0:
        b = a - 0.5 * c
        k = math.ceil((-b + math.sqrt(b * b + 2.0 * c * dt_s)) / c)
    elif a > 0.0:
        k = math.ceil(dt_s / a)
    else:
        return sys.maxsize  # steps that take no time never reach dt_s
    k = max(k, 1)
    while k > 1 and span(coef_s, batch, ctx_sum, k - 1) >= dt_s:
        k -= 1
    while span(coef_s, batch, ctx_sum, k) < dt_s:
        k += 1
    return k


def mixed_step(
    coef: tuple[float, ...], decode_seqs: int, decode_ctx: int, prefill: list[tuple[int, int, int]]
) -> float:
    """Time (s) or energy (J) of one step that decodes and prefills.

    `prefill` holds (job, chunk tokens, tokens already cached) per prefilling sequence.
    """
    tokens = 0
    attn = 0
    for _, m, past in prefill:
        tokens += m
        attn += m * past + m * (m + 1) // 2
    return (
        coef[0]
        + coef[1] * decode_seqs
        + coef[2] * decode_ctx
        + coef[3] * len(prefill)
        + coef[4] * tokens
        + coef[5] * attn
    )


def sequence_energy_j(coef_j: ArrayLike, n_in: ArrayLike, n_out: ArrayLike, chunks: ArrayLike = 1) -> Array:
    """Per-sequence (not shared) cost of requests, in the unit of `coef_j` (J or s).

    Prefill: c3 per chunk + c4·n_in + c5·n_in(n_in+1)/2 (chunking does not change the attention
    pairs). Decode steps k = 1…n_out−1 at context n_in + k: Σ (c1 + c2·(n_in + k)).
    """
    i, o = np.asarray(n_in, dtype=float), np.asarray(n_out, dtype=float)
    return sequence_cost(np.asarray(coef_j, dtype=float), i, o, np.asarray(chunks, dtype=float))


def sequence_cost(c: Sequence[float], n_in: Any, n_out: Any, chunks: Any = 1) -> Any:
    """`sequence_energy_j` on whatever numbers it is given: Python scalars for a router's
    per-arrival decision (no numpy overhead), float arrays from `sequence_energy_j`."""
    k = n_out - 1
    prefill = c[3] * chunks + c[4] * n_in + c[5] * n_in * (n_in + 1) / 2
    decode = k * (c[1] + c[2] * n_in) + c[2] * k * (k + 1) / 2
    return prefill + decode


def request_energy_j(
    coef_j: ArrayLike, n_in: ArrayLike, n_out: ArrayLike, chunks: ArrayLike, share: ArrayLike
) -> Array:
    """Energy (J) charged to requests: their own sequence costs plus `share` × the step constant.

    `share` is Σ 1/(sequences in the step) over the steps a request took part in.
    """
    c = np.asarray(coef_j, dtype=float)
    return sequence_energy_j(c, n_in, n_out, chunks) + c[0] * np.asarray(share, dtype=float)


def kv_capacity_tokens(oracle: Oracle, explicit: int | None, memory_fraction: float) -> int:
    """KV-cache tokens a server holds: `explicit` if given, else from the oracle's memory spec."""
    if explicit is not None:
        return int(explicit)
    if oracle.memory is None:
        raise ConfigError(
            f"oracle {oracle.name!r} has no memory spec, so the KV-cache size is unknown: set server.kv_capacity_tokens"
        )
    cap = oracle.memory.kv_capacity_tokens(memory_fraction)
    if cap < 1:
        raise ConfigError(
            f"oracle {oracle.name!r}: the weights leave no KV-cache room at server.kv_memory_fraction={memory_fraction}"
        )
    return cap

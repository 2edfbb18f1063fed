"""Energy and time math of serving steps, as pure functions (no SimPy, no state).

A step's time (s) and energy (J) are linear in its features (`oracle.features.FEATURES`):
`[const, decode_seqs, decode_ctx, prefill_seqs, prefill_tokens, prefill_attn]`. Between two
events that change the batch, B decoding sequences advance together and their context sum grows
by B per step, so the time and energy of k steps are arithmetic series (`span`). The per-sequence
part of a request's energy depends only on its own lengths (`sequence_energy_j`); the shared
`const` part is split equally between the sequences of each step, which the engine tracks as a
running sum of 1/(sequences in the step) (`share`).

`sim.kernel.costs` compiles the same formulas (the same float operations, so the same bits;
tests/sim/kernel/test_costs.py): a change here goes there too.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from oracle.features import StepCoef
from oracle.model import Oracle

Array = NDArray[np.float64]


@dataclass(frozen=True)
class StepCosts:
    """Step coefficients of one (model, GPU) by feature name: s and J per unit, idle power (W),
    and the power limit (W; None: no cap) at which the GPU throttles a step."""

    time_s: StepCoef
    energy_j: StepCoef
    idle_power_w: float
    power_limit_w: float | None = None

    @classmethod
    def from_oracle(cls, oracle: Oracle) -> StepCosts:
        """Plain-float copy of an oracle's step model (fast to read in the engine's loop)."""
        limit = None if oracle.power_limit_w is None else float(oracle.power_limit_w)
        return cls(
            StepCoef.of(oracle.time_coef_s), StepCoef.of(oracle.energy_coef_j), float(oracle.idle_power_w), limit
        )

    def capped(self, dt_s: float, de_j: float) -> float:
        """A step's time (s) under the power cap: a step that would draw more than the limit is
        throttled (the GPU lowers its clocks) and lasts energy / limit."""
        limit = self.power_limit_w
        return de_j / limit if limit is not None and de_j > limit * dt_s else dt_s

    def span_s(self, batch: int, ctx_sum: int, steps: int) -> float:
        """Time (s) of `steps` decode steps under the power cap (`span` on each side of the one
        step where the implied power crosses the limit: power is monotone along a span)."""
        ct, ce, limit = self.time_s, self.energy_j, self.power_limit_w
        t = span(ct, batch, ctx_sum, steps)
        if limit is None:
            return t
        a_t = ct.const + ct.decode_seqs * batch + ct.decode_ctx * ctx_sum
        a_e = ce.const + ce.decode_seqs * batch + ce.decode_ctx * ctx_sum
        d0, d1 = a_e - limit * a_t, (ce.decode_ctx - limit * ct.decode_ctx) * batch
        if d1 == 0.0:
            lo, hi = (0, steps) if d0 > 0.0 else (0, 0)
        elif d1 > 0.0:  # throttled for i > −d0/d1
            lo, hi = max(0, math.floor(-d0 / d1) + 1), steps
        else:  # throttled for i < −d0/d1
            lo, hi = 0, min(steps, math.ceil(-d0 / d1))
        if lo >= hi:
            return t
        start = ctx_sum + lo * batch
        return t - span(ct, batch, start, hi - lo) + span(ce, batch, start, hi - lo) / limit

    def decode(self, batch: int, ctx_sum: int, steps: int) -> tuple[float, float, float]:
        """Time (s, under the power cap), energy (J) and peak step power (W) of `steps` decode
        steps: `span_s`, `span` and the higher power of the first and last steps in one pass."""
        ct, ce, limit = self.time_s, self.energy_j, self.power_limit_w
        c2t, c2e = ct.decode_ctx, ce.decode_ctx
        a_t = ct.const + ct.decode_seqs * batch + c2t * ctx_sum
        a_e = ce.const + ce.decode_seqs * batch + c2e * ctx_sum
        de = steps * a_e + c2e * batch * steps * (steps - 1) * 0.5
        last = ctx_sum + (steps - 1) * batch  # step power is monotone along a span: the peak is at an end
        l_t = ct.const + ct.decode_seqs * batch + c2t * last
        l_e = ce.const + ce.decode_seqs * batch + c2e * last
        dt = steps * a_t + c2t * batch * steps * (steps - 1) * 0.5
        if limit is not None and (a_e - limit * a_t > 0.0 or l_e - limit * l_t > 0.0):
            dt = self.span_s(batch, ctx_sum, steps)
            a_t = a_e / limit if a_e - limit * a_t > 0.0 else a_t
            l_t = l_e / limit if l_e - limit * l_t > 0.0 else l_t
        p_first = a_e / a_t if a_t > 0.0 else 0.0
        p_last = l_e / l_t if l_t > 0.0 else 0.0
        return dt, de, p_first if p_first > p_last else p_last

    def mixed(self, decode_seqs: int, decode_ctx: int, prefill: list[tuple[int, int, int]]) -> tuple[float, float]:
        """Time (s, under the power cap) and energy (J) of one step that decodes and prefills
        (`mixed_step` of both coefficient sets, the features summed once)."""
        tokens, attn = prefill_sums(prefill)
        n = len(prefill)
        de = _step_value(self.energy_j, decode_seqs, decode_ctx, n, tokens, attn)
        dt = _step_value(self.time_s, decode_seqs, decode_ctx, n, tokens, attn)
        limit = self.power_limit_w
        return (de / limit if limit is not None and de > limit * dt else dt), de

    def steps_to_reach(self, batch: int, ctx_sum: int, dt_s: float) -> int:
        """Smallest k ≥ 1 whose decode span, under the power cap, lasts ≥ dt_s (s)."""
        k = steps_to_reach(self.time_s, batch, ctx_sum, dt_s)  # the cap only lengthens steps
        if self.power_limit_w is None or k <= 1 or not self._throttled(batch, ctx_sum, k):
            return k
        lo, hi = 1, k
        while lo < hi:
            mid = (lo + hi) // 2
            if self.span_s(batch, ctx_sum, mid) >= dt_s:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _throttled(self, batch: int, ctx_sum: int, steps: int) -> bool:
        """Whether any of `steps` decode steps may draw more than the power limit (power is
        monotone along a span: its ends decide; within 1e-9 counts, a false yes costs only time)."""
        ct, ce, limit = self.time_s, self.energy_j, self.power_limit_w
        assert limit is not None
        for ctx in (ctx_sum, ctx_sum + (steps - 1) * batch):
            e = ce.const + ce.decode_seqs * batch + ce.decode_ctx * ctx
            if e - limit * (ct.const + ct.decode_seqs * batch + ct.decode_ctx * ctx) > -1e-9 * abs(e):
                return True
        return False


def span(coef: StepCoef, batch: int, ctx_sum: int, steps: int) -> float:
    """Time (s) or energy (J) of `steps` decode steps of `batch` sequences.

    `ctx_sum` is the sum of their contexts in the first step; it grows by `batch` per step:
    Σ_{j<k} (c0 + c1·B + c2·(S + j·B)) = k·(c0 + c1·B + c2·S) + c2·B·k(k−1)/2.
    """
    c2 = coef.decode_ctx
    return steps * (coef.const + coef.decode_seqs * batch + c2 * ctx_sum) + c2 * batch * steps * (steps - 1) * 0.5


def steps_to_reach(coef_s: StepCoef, batch: int, ctx_sum: int, dt_s: float) -> int:
    """Smallest k ≥ 1 whose decode span time `span(coef_s, batch, ctx_sum, k)` is ≥ dt_s (s).

    Solves the quadratic C/2·k² + (A − C/2)·k = dt with A the first step's time and C = c2·B,
    then corrects the rounding with the exact series.
    """
    if dt_s <= 0.0:
        return 1
    a = coef_s.const + coef_s.decode_seqs * batch + coef_s.decode_ctx * ctx_sum
    c = coef_s.decode_ctx * batch
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


def mixed_step(coef: StepCoef, decode_seqs: int, decode_ctx: int, prefill: list[tuple[int, int, int]]) -> float:
    """Time (s) or energy (J) of one step that decodes and prefills.

    `prefill` holds (job, chunk tokens, tokens already cached) per prefilling sequence.
    """
    return _step_value(coef, decode_seqs, decode_ctx, len(prefill), *prefill_sums(prefill))


def prefill_sums(prefill: list[tuple[int, int, int]]) -> tuple[int, int]:
    """(prompt tokens, causal attention pairs) a step's prefill chunks compute; `prefill` holds
    (job, chunk tokens, tokens already cached) per prefilling sequence."""
    tokens = attn = 0
    for _, m, past in prefill:
        tokens += m
        attn += m * past + m * (m + 1) // 2
    return tokens, attn


def _step_value(
    coef: StepCoef, decode_seqs: int, decode_ctx: int, prefill_seqs: int, prefill_tokens: int, prefill_attn: int
) -> float:
    """Time (s) or energy (J) of one step with these summed features."""
    return (
        coef.const
        + coef.decode_seqs * decode_seqs
        + coef.decode_ctx * decode_ctx
        + coef.prefill_seqs * prefill_seqs
        + coef.prefill_tokens * prefill_tokens
        + coef.prefill_attn * prefill_attn
    )


def sequence_energy_j(coef_j: ArrayLike, n_in: ArrayLike, n_out: ArrayLike, chunks: ArrayLike = 1) -> Array:
    """Per-sequence (not shared) cost of requests, in the unit of `coef_j` (J or s).

    Prefill: c3 per chunk + c4·n_in + c5·n_in(n_in+1)/2 (chunking does not change the attention
    pairs). Decode steps k = 1…n_out−1 at context n_in + k: Σ (c1 + c2·(n_in + k)).
    """
    i, o = np.asarray(n_in, dtype=float), np.asarray(n_out, dtype=float)
    return sequence_cost(StepCoef.of(coef_j), i, o, np.asarray(chunks, dtype=float))


def sequence_cost(c: StepCoef, n_in: Any, n_out: Any, chunks: Any = 1) -> Any:
    """`sequence_energy_j` on whatever numbers it is given: Python scalars for a router's
    per-arrival decision (no numpy overhead), float arrays from `sequence_energy_j`."""
    k = n_out - 1
    prefill = c.prefill_seqs * chunks + c.prefill_tokens * n_in + c.prefill_attn * n_in * (n_in + 1) / 2
    decode = k * (c.decode_seqs + c.decode_ctx * n_in) + c.decode_ctx * k * (k + 1) / 2
    return prefill + decode


def recompute_cost(c: StepCoef, tokens: Any, pairs: Any, steps: Any, ctx: Any) -> Any:
    """Extra cost of preemptions: prompt tokens prefilled again or thrown away (and their attention
    pairs), less the decode steps (and their contexts) that re-prefills replaced."""
    return c.prefill_tokens * tokens + c.prefill_attn * pairs - c.decode_seqs * steps - c.decode_ctx * ctx


def request_energy_j(
    coef_j: ArrayLike, n_in: ArrayLike, n_out: ArrayLike, chunks: ArrayLike, share: ArrayLike
) -> Array:
    """Energy (J) charged to requests: their own sequence costs plus `share` × the step constant.

    `share` is Σ 1/(sequences in the step) over the steps a request took part in.
    """
    c = StepCoef.of(coef_j)
    return sequence_energy_j(c, n_in, n_out, chunks) + c.const * np.asarray(share, dtype=float)

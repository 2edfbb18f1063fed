"""The linear part of the kernel's step costs: one step's time (s) or energy (J) from a row of
coefficients, and the arithmetic series of a decode span at one clock; compiled.

A row (`COLUMNS` values, a clock ladder's level: `sim.kernel.costs`) holds the six step
coefficients (const, decode_seqs, decode_ctx, prefill_seqs, prefill_tokens, prefill_attn), then a
mixture of experts' reads (`EXPERTS`: the cost of reading every routed expert once), the prefill
overlap (`oracle.model.Overlap`: `HIDE_WEIGHTS`, the weights' read a prefill can hide, and
`HIDE_TOKEN`, one prompt token's compute), `LOG_UNTOUCHED` (the log of the chance that one token
leaves a given expert untouched, ln(1 − top_k / experts)) and `CLOCK`, the level's SM clock (MHz;
0 where the GPU's clocks are unknown).

A step of n tokens (decoded sequences plus prefilled prompt tokens) reads the routed experts its
tokens touch, an expected 1 − (1 − top_k / experts)^n of them (`experts_at`); a step prefilling n
prompt tokens hides min(HIDE_WEIGHTS, HIDE_TOKEN · n) of its shared cost (`hidden_at`: its
weights are read while its prompt computes). Between two events that change the batch, B decoding
sequences advance together and their context sum grows by B per step, so the time and energy of k
steps at one clock are arithmetic series (`span`).
"""

from __future__ import annotations

import math

from numba import njit

NEVER = (1 << 63) - 1  # steps that take no time never reach a duration
EXPERTS, HIDE_WEIGHTS, HIDE_TOKEN, LOG_UNTOUCHED, CLOCK = 6, 7, 8, 9, 10  # the columns after the six coefficients
COLUMNS = 11


@njit(cache=True, inline="always")
def experts_at(c, tokens):  # type: ignore[no-untyped-def]
    """Time (s) or energy (J) of reading the routed experts a step of `tokens` tokens touches."""
    if c[EXPERTS] == 0.0:
        return 0.0
    return -c[EXPERTS] * math.expm1(tokens * c[LOG_UNTOUCHED])


@njit(cache=True, inline="always")
def const_at(c, tokens):  # type: ignore[no-untyped-def]
    """A step's shared cost: its constant plus the experts its `tokens` tokens touch."""
    return c[0] + experts_at(c, tokens)


@njit(cache=True, inline="always")
def hidden_at(c, tokens):  # type: ignore[no-untyped-def]
    """What a step prefilling `tokens` prompt tokens hides of its weights' read (s or J)."""
    return min(c[HIDE_WEIGHTS], c[HIDE_TOKEN] * tokens)


@njit(cache=True)
def span(c, batch, ctx_sum, steps):  # type: ignore[no-untyped-def]
    """Time (s) or energy (J) of `steps` decode steps of `batch` sequences whose contexts sum to
    `ctx_sum` at the first step (it grows by `batch` per step), coefficients `c`."""
    c2 = c[2]
    return steps * (const_at(c, batch) + c[1] * batch + c2 * ctx_sum) + c2 * batch * steps * (steps - 1) * 0.5


@njit(cache=True)
def step_value(c, decode_seqs, decode_ctx, prefill_seqs, tokens, attn):  # type: ignore[no-untyped-def]
    return (
        const_at(c, decode_seqs + tokens)
        - hidden_at(c, tokens)
        + c[1] * decode_seqs
        + c[2] * decode_ctx
        + c[3] * prefill_seqs
        + c[4] * tokens
        + c[5] * attn
    )


@njit(cache=True, inline="always")
def span_ends(c, batch, ctx_sum, steps):  # type: ignore[no-untyped-def]
    """The first and the last step's value (time s or energy J) of a decode span."""
    a = const_at(c, batch) + c[1] * batch
    return a + c[2] * ctx_sum, a + c[2] * (ctx_sum + (steps - 1) * batch)


@njit(cache=True)
def reach(c, batch, ctx_sum, dt_s):  # type: ignore[no-untyped-def]
    """Smallest k ≥ 1 whose decode span time without a cap, `span(c, batch, ctx_sum, k)`, is ≥
    dt_s: the quadratic C/2·k² + (A − C/2)·k = dt solved, with A the first step's time and C = c2·B,
    then the rounding corrected with the series itself."""
    if dt_s <= 0.0:
        return 1
    a = const_at(c, batch) + c[1] * batch + c[2] * ctx_sum
    cb = c[2] * batch
    if cb > 0.0:
        b = a - 0.5 * cb
        k = math.ceil((-b + math.sqrt(b * b + 2.0 * cb * dt_s)) / cb)
    elif a > 0.0:
        k = math.ceil(dt_s / a)
    else:
        return NEVER
    k = max(k, 1)
    while k > 1 and span(c, batch, ctx_sum, k - 1) >= dt_s:
        k -= 1
    while span(c, batch, ctx_sum, k) < dt_s:
        k += 1
    return k

"""The kernel's step costs and KV arithmetic on random inputs: decode spans' closed forms against
the steps summed one by one, a mixed step and KV units bit for bit against `sim.engine.costs.StepCosts`
and `sim.engine.kv.KvLayout`, block phases against the decoders' allocations step by step."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from oracle.features import StepCoef
from oracle.model import ExpertReads, Overlap
from sim.engine.costs import StepCosts
from sim.engine.kv import KvLayout
from sim.kernel import costs, kv, linear
from tests.sim.kernel.test_lists import replica, row

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def coefficient(lo: float, hi: float) -> st.SearchStrategy[float]:
    """Zero, a round number, or any float in [lo, hi]."""
    return st.sampled_from([0.0, lo, hi, 0.5 * (lo + hi)]) | st.floats(lo, hi)


# time (s) and energy (J) per feature: const, decode_seqs, decode_ctx, prefill_seqs, prefill_tokens, prefill_attn
TIME = st.tuples(
    coefficient(1e-3, 0.05),
    coefficient(1e-5, 1e-3),
    coefficient(1e-8, 1e-5),
    coefficient(1e-4, 5e-3),
    coefficient(1e-6, 1e-4),
    coefficient(1e-10, 1e-7),
)
POWER = st.tuples(*[st.floats(50.0, 1000.0)] * 6)  # W: energy coefficients are time ones times these


def value(c, batch: int, ctx: int) -> float:
    """A decode step's time (s) or energy (J) from a kernel row: the six coefficients, then the
    expert reads (the routed experts a step of `batch` tokens touches: 1 − untouched^batch); a
    decode step prefills nothing, so it hides nothing."""
    return c[0] + c[6] * -math.expm1(batch * c[linear.LOG_UNTOUCHED]) + c[1] * batch + c[2] * ctx


def power(c_t, c_e, batch: int, ctx: int) -> float | None:
    """The power (W) of a decode step of `batch` sequences of `ctx` context tokens in all."""
    t = value(c_t, batch, ctx)
    return value(c_e, batch, ctx) / t if t > 0.0 else None


# a mixture of experts' reads: none, or (s to read every routed expert once, chance a token leaves one untouched)
EXPERTS = st.sampled_from([(0.0, 1.0)]) | st.tuples(st.floats(1e-4, 0.02), st.sampled_from([0.9375, 0.96875, 0.5]))


# a prefill overlap: none, or (share of the constant that is the weights' read, s of one prompt token's compute)
OVERLAP = st.sampled_from([(0.0, 0.0)]) | st.tuples(st.floats(0.0, 1.0), st.floats(1e-7, 1e-4))


def log_row(c: tuple[float, ...]) -> tuple[float, ...]:
    """A kernel row from six coefficients, the expert reads, the overlap's weights and prompt
    token, and the untouched chance (its log)."""
    return (*c[:9], math.log(c[9]))


@st.composite
def spans(draw: st.DrawFn) -> tuple[tuple[np.ndarray, np.ndarray, float, float], int, int, int]:
    """Random step coefficients (s, J), power cap (W; 0: none) and decode span (batch, context
    sum, steps). The cap is none, any, or the power at a step of the span (the span crosses it),
    or makes the step power flat along the span."""
    ct = draw(TIME)
    ce = tuple(t * p for t, p in zip(ct, draw(POWER), strict=True))
    ce = tuple(draw(st.sampled_from([e, e, 0.0, 1.0]) if i == 2 else st.just(e)) for i, e in enumerate(ce))
    moe_t, untouched = draw(EXPERTS)
    moe_e = moe_t * draw(st.floats(50.0, 1000.0))
    if moe_t and ce[0] == 0.0:
        ce = (1e-3, *ce[1:])  # expert reads are shared in step constants: a positive one
    share, token_t = draw(OVERLAP)
    token_e = token_t * draw(st.floats(50.0, 1000.0))
    ct = log_row((*ct, moe_t, share * ct[0], token_t, untouched))
    ce = log_row((*ce, moe_e, share * ce[0], token_e, untouched))
    batch = draw(st.integers(0, 512))
    ctx_sum = draw(st.integers(0, 4_000_000) | st.integers(0, 64))
    n = draw(st.integers(1, 5_000) | st.integers(1, 8))
    kind = draw(st.sampled_from(["none", "any", "crossed", "between", "flat"]))
    limit = None
    if kind in ("any", "flat"):
        limit = draw(st.floats(50.0, 1200.0) | st.sampled_from([100.0, 300.0]))
    elif kind in ("crossed", "between"):
        i = draw(st.integers(0, n - 1))
        limit = power(ct, ce, batch, ctx_sum + i * batch)
        if kind == "between" and limit is not None:
            limit = 0.5 * (limit + (power(ct, ce, batch, ctx_sum + (i + 1) * batch) or limit))
        if limit is not None and limit <= 0.0:
            limit = None
    if kind == "flat":
        ce = (ce[0], ce[1], limit * ct[2], *ce[3:])  # the step power neither grows nor falls with the context
    clock = draw(st.sampled_from([0.0, 1980.0, 1410.0]))  # MHz (0: unknown)
    return (row((*ct, clock)), row((*ce, clock)), limit or 0.0, 0.0), batch, ctx_sum, n


def stepwise(
    c: tuple[np.ndarray, np.ndarray, float, float], batch: int, ctx_sum: int, n: int
) -> tuple[float, float, float]:
    """The reference: time (s), energy (J) and peak power (W) of n decode steps summed one by one,
    each throttled to energy / cap if it would draw more than the cap."""
    ct, ce, cap = c[0][0], c[1][0], c[2]
    dt = de = peak = 0.0
    for i in range(n):
        ctx = ctx_sum + i * batch
        t, e = value(ct, batch, ctx), value(ce, batch, ctx)
        if cap > 0.0 and e > cap * t:
            t = e / cap
        dt, de = dt + t, de + e
        peak = max(peak, e / t if t > 0.0 else 0.0)
    return dt, de, peak


def close(a: float, b: float, n: int) -> bool:
    """Equal to the rounding of a sum of n terms (the closed forms against step-by-step sums)."""
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12 * n)


@SETTINGS
@given(spans())
def test_span_s_and_decode_are_the_steps_summed(span):
    """span_s and decode: time, energy and peak power of a decode span under the cap."""
    c, batch, ctx_sum, n = span
    dt, de, peak = stepwise(c, batch, ctx_sum, n)
    got = costs.decode(*c, batch, ctx_sum, n)
    assert close(costs.span_s(*c, batch, ctx_sum, n), dt, n) and close(got[0], dt, n)
    assert close(got[1], de, n) and math.isclose(got[2], peak, rel_tol=1e-9)
    ce = c[1][0]
    shared = n * ce[6] * -math.expm1(batch * ce[linear.LOG_UNTOUCHED]) / ce[0] if ce[6] else 0.0  # in step constants
    assert math.isclose(got[3], shared, rel_tol=1e-12)
    assert got[4] == ce[linear.CLOCK] * got[0]  # one clock: its MHz times the span's time


@SETTINGS
@given(spans(), st.floats(0.0, 30.0) | st.sampled_from([-1.0, 0.0, 1e-9, 0.02]), st.sampled_from([None, 1.0, 0.999]))
def test_steps_to_reach_is_the_first_step_boundary_past_dt(span, dt_s, of_span):
    """steps_to_reach: the fewest decode steps that last dt_s under the cap (dt_s drawn, or the
    span's own time)."""
    c, batch, ctx_sum, n = span
    if of_span is not None:
        dt_s = costs.span_s(*c, batch, ctx_sum, n) * of_span
    k = costs.steps_to_reach(*c, batch, ctx_sum, dt_s)
    if k == linear.NEVER:  # steps that take no time
        assert costs.span_s(*c, batch, ctx_sum, 1_000) == 0.0 < dt_s
        return
    assert k >= 1 and costs.span_s(*c, batch, ctx_sum, k) >= dt_s
    assert k == 1 or costs.span_s(*c, batch, ctx_sum, k - 1) < dt_s
    if k <= 5_000:
        assert close(costs.span_s(*c, batch, ctx_sum, k), stepwise(c, batch, ctx_sum, k)[0], k)


@pytest.mark.parametrize(
    "ct, ce",
    [
        # far above the cap, its excess over the cap falls by ~4e-19 J a step: the whole span is throttled
        ((0.01, 0.001, 1e-5, 0.002, 1e-4, 1e-7), (6000.0, 0.01, math.nextafter(300 * 1e-5, 0.0), 0.001, 0.01, 4e-7)),
        # far below the cap, its excess over the cap grows by ~4e-19 J a step: no step is throttled
        ((0.05, 0.001, 1e-5, 0.002, 1e-4, 1e-7), (0.0, 0.01, math.nextafter(300 * 1e-5, 1.0), 0.001, 0.01, 4e-7)),
    ],
)
def test_span_s_with_a_step_power_all_but_flat(ct, ce):
    """A span whose step power changes by a rounding error a step, so that the step where it would
    cross the cap is beyond 2**63 (an int64 overflow once): the steps summed one by one."""
    c = (row(ct), row(ce), 300.0, 0.0)
    dt, de, _ = stepwise(c, 1, 1000, 50)
    assert close(costs.span_s(*c, 1, 1000, 50), dt, 50) and close(costs.decode(*c, 1, 1000, 50)[1], de, 50)
    k = costs.steps_to_reach(*c, 1, 1000, 100.0)
    assert costs.span_s(*c, 1, 1000, k) >= 100.0 > costs.span_s(*c, 1, 1000, k - 1)


@njit
def _mixed(r, chunks, pasts, decode_seqs, decode_ctx):  # type: ignore[no-untyped-def]
    """`costs.mixed` with the prefill work (job i: chunks[i] tokens after pasts[i] cached ones)."""
    r.nwork = chunks.size
    for i in range(chunks.size):
        r.work_j[i], r.work_m[i], r.work_past[i] = i, chunks[i], pasts[i]
    return costs.mixed(r, 0.0, decode_seqs, decode_ctx)


prefills = st.lists(st.tuples(st.integers(1, 8192), st.integers(0, 100_000)), max_size=8)


@SETTINGS
@given(spans(), prefills)
def test_mixed_is_the_reference(span, prefill):
    """mixed: time and energy of a step that decodes and prefills (`StepCosts.mixed`, bit for bit)."""
    (lt, le, cap, _), batch, ctx_sum, _ = span
    ct, ce = lt[0], le[0]
    experts = ExpertReads(ct[6], ce[6], math.exp(ct[linear.LOG_UNTOUCHED])) if ct[6] else None
    hide = Overlap(ct[7], ct[8], ce[7], ce[8]) if ct[8] else None
    reference = StepCosts(StepCoef.of(ct[:6]), StepCoef.of(ce[:6]), 60.0, cap or None, experts=experts, overlap=hide)
    r = replica(ct=reference.ladder_t[0], ce=reference.ladder_e[0], limit=cap or None)
    chunks = np.array([m for m, _ in prefill], np.int64)
    pasts = np.array([p for _, p in prefill], np.int64)
    want = reference.mixed(batch, ctx_sum, [(i, m, p) for i, (m, p) in enumerate(prefill)])
    assert _mixed(r, chunks, pasts, batch, ctx_sum) == want


def test_a_capped_span_is_longer():
    """The cap lengthens the steps that draw more than it (the cases above are not all uncapped)."""
    ct, ce = (0.01, 0.001, 1e-5, 0.002, 1e-4, 1e-7), (3.0, 0.01, 3e-5, 0.001, 0.01, 4e-7)
    free, capped = (row(ct), row(ce), 0.0, 0.0), (row(ct), row(ce), 100.0, 0.0)
    assert costs.span_s(*capped, 8, 1000, 50) > costs.span_s(*free, 8, 1000, 50)
    assert costs.steps_to_reach(*capped, 8, 1000, 1.0) < costs.steps_to_reach(*free, 8, 1000, 1.0)
    dt, de, peak, extra, mhz_s = costs.decode(*capped, 8, 1000, 50)
    assert dt == costs.span_s(*capped, 8, 1000, 50) and peak == 100.0 and extra == 0.0 and mhz_s == 0.0


# --- KV units and block phases -------------------------------------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> KvLayout:
    full = draw(st.integers(0, 8))
    window = draw(st.integers(0 if full else 1, 8))
    block = draw(st.sampled_from([1, 2, 16]) | st.integers(1, 64))
    return KvLayout(block, full, window, draw(st.integers(0, 20)), 1, draw(st.sampled_from([0, 0, 1, 37])))


def layout_replica(layout: KvLayout) -> object:
    return replica(
        bs=layout.block_size,
        full=layout.full_units,
        wunits=layout.window_units,
        wblocks=layout.window_blocks,
        sunits=layout.state_units,
    )


@SETTINGS
@given(layouts(), st.lists(st.integers(0, 100_000) | st.integers(0, 100), min_size=1, max_size=20))
def test_units_are_the_reference(layout, tokens):
    """units: the KV units a sequence of so many tokens holds."""
    r = layout_replica(layout)
    assert [kv.units(r, t) for t in tokens] == [layout.units(t) for t in tokens]
    assert layout.units_of(tokens).tolist() == [layout.units(t) for t in tokens]


@njit
def _phases(r, keys, weights, n, steps, limits, frees):  # type: ignore[no-untyped-def]
    """Add the decoders' phases, set the steps done to n; then `over` and `steps_within` per query."""
    for i in range(keys.size):
        kv.phase_add(r, keys[i], weights[i])
    r.N = n
    over = np.empty(steps.size, np.int64)
    within = np.empty(limits.size, np.int64)
    for i in range(steps.size):
        over[i] = kv.over(r, steps[i])
    for i in range(limits.size):
        within[i] = kv.steps_within(r, limits[i], frees[i])
    return over, within, r.ptotal, kv.step_need(r)


@SETTINGS
@given(
    st.sampled_from([1, 2, 16]) | st.integers(1, 40),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 9)), max_size=30),
    st.integers(0, 10**6),
    st.lists(st.integers(0, 200) | st.integers(0, 10**5), min_size=1, max_size=10),
    st.lists(st.tuples(st.integers(0, 200) | st.integers(0, 10**5), st.integers(0, 10**4)), min_size=1, max_size=10),
)
def test_block_phases_sum_the_decoders_allocations_step_by_step(bs, decoders, n, steps, queries):
    """over and steps_within: units the decoders allocate in the next steps, steps that fit in free
    units; a decoder of phase key allocates its weight in the step after m completed steps when
    −m ≡ key (mod block)."""
    keys = np.array([k % bs for k, _ in decoders], np.int64)
    weights = np.array([w for _, w in decoders], np.int64)
    table = np.bincount(keys, weights, minlength=bs).astype(np.int64)  # units allocated at each phase

    def per_step(m: int, count: int) -> np.ndarray:  # units allocated by the `count` steps after m completed ones
        return table[-(m + np.arange(count)) % bs]

    def within(limit: int, free: int) -> int:
        return int(np.searchsorted(np.cumsum(per_step(n, limit)), free, side="right"))

    r = layout_replica(KvLayout(bs, 1, 0, 0, 1))
    limits = np.array([q[0] for q in queries], np.int64)
    frees = np.array([q[1] for q in queries], np.int64)
    over, within_k, total, need = _phases(r, keys, weights, n, np.array(steps, np.int64), limits, frees)
    assert total == weights.sum() and need == per_step(n, 1)[0]
    assert over.tolist() == [int(per_step(n, s).sum()) for s in steps]
    assert within_k.tolist() == [within(lim, free) for lim, free in queries]

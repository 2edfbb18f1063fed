"""Time (s) and energy (J) of serving steps and decode spans under a power cap and a clock
controller, compiled.

Coefficients come as a clock ladder: `lt` (s) and `le` (J) are (levels × `linear.COLUMNS`) arrays,
one row per supported SM clock of the GPU from its own down (`oracle.clocks.ladder`), each row in
the layout of `sim.kernel.linear` (the six step coefficients, a mixture of experts' reads, the
prefill overlap, the experts' untouched chance and the level's clock); row 0 is the clock it runs
at. `limit` is the power cap (W; 0: none).

A step's shared costs (its constant, the experts its tokens touch, less what its prefill hides)
are split between its sequences by the engine, and so is the energy a lower clock changes: both are
returned as `extra`, in units of the step's constant energy at row 0, so that requests' charges
add up to the steps' energy.

Under a power cap, a step that would draw more than the cap runs, as the hardware does it, at the
highest clock whose power fits (a compute-bound prefill slows more than a memory-bound decode). A
GPU with no clock ladder (one row) is throttled as before clocks were modelled: the step lasts
energy / cap. A frequency controller (`tau` > 0, s) lowers the clock further: each step runs at
the lowest clock whose step time stays within `tau` (never above the cap's clock; a step slower
than `tau` at full clock runs at full clock, or the cap's). One that cannot switch at every step
holds a clock instead (`floor` ≥ 0, a ladder level; −1: switch freely): each step then runs at the
held clock, or lower where the cap needs it, and `tau` is not read. Which level is which:
`sim.kernel.levels`. Along a decode span the levels are monotone in the step, so the span is a few
runs of one clock, each an arithmetic series (`sim.kernel.linear.span`).

`sim.engine.costs.StepCosts` calls these; the step-by-step reference (`server.exact_steps`) sums single
steps (`step`).
"""

from __future__ import annotations

import math

from numba import njit

from sim.kernel.levels import budget, hold, power_level, run_end, time_level
from sim.kernel.linear import (
    CLOCK,
    experts_at,
    hidden_at,
    reach,
    span,
    span_ends,
    step_value,
)


@njit(cache=True, inline="always")
def _over(limit, a_t, a_e, l_t, l_e):  # type: ignore[no-untyped-def]
    """Whether the first (a) or last (l) step of a decode span draws more than the cap (step power
    is monotone along a span: its ends decide)."""
    return limit > 0.0 and (a_e - limit * a_t > 0.0 or l_e - limit * l_t > 0.0)


@njit(cache=True, inline="always")
def _slowed(tau, first_s, floor):  # type: ignore[no-untyped-def]
    """Whether the controller slows a step, or a decode span whose first step takes `first_s` (s) at
    full clock: it holds a level below full clock, or, free to switch, its budget leaves room there
    (time grows along a span)."""
    return floor > 0 or (floor < 0 and tau > 0.0 and first_s <= tau)


@njit(cache=True, inline="always")
def _free(tau, floor):  # type: ignore[no-untyped-def]
    """The budget the step-by-step time levels read: none while the controller holds a level
    (`_laddered`)."""
    return tau if floor < 0 else 0.0


@njit(cache=True)
def step(lt, le, limit, tau, decode_seqs, decode_ctx, prefill_seqs, tokens, attn, floor=-1):  # type: ignore[no-untyped-def]
    """Time (s), energy (J), `extra` and SM clock (MHz) of one step with these summed features,
    under the cap `limit` (W) and the controller's step-time budget `tau` (s; 0: none), or at
    the held ladder level `floor` (≥ 0)."""
    de = step_value(le[0], decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
    dt = step_value(lt[0], decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
    apart = experts_at(le[0], decode_seqs + tokens) - hidden_at(le[0], tokens)  # the shared cost beside c0
    shared = apart / le[0, 0] if apart != 0.0 else 0.0  # in step constants
    over = limit > 0.0 and de > limit * dt
    if not over and not _slowed(tau, dt, floor):
        return dt, de, shared, lt[0, CLOCK]
    last = lt.shape[0] - 1
    if last == 0:  # no clock ladder: stretched to energy / cap (no controller)
        return (de / limit if over else dt), de, shared, lt[0, CLOCK]
    x = (decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
    if floor >= 0:  # held: that clock, or lower where the cap needs it (at level 0 it did not fit)
        level = power_level(lt, le, limit, max(floor, 1), *x)
    else:
        level = power_level(lt, le, limit, 1, *x) if over else 0  # level 0 draws more than the cap
        level = time_level(lt, tau, level, *x)
    if level == 0:
        return dt, de, shared, lt[0, CLOCK]
    e = step_value(le[level], *x)
    return step_value(lt[level], *x), e, (e - de + apart) / le[0, 0], lt[level, CLOCK]


@njit(cache=True)
def mixed(r, now, decode_seqs, decode_ctx):  # type: ignore[no-untyped-def]
    """`step` of a step that decodes the decoders and prefills `r`'s work (formed: the queue is
    what it leaves waiting), starting at `now` (s), at the clock the controller holds then
    (`hold`) or under its budget."""
    tokens = attn = 0
    for i in range(r.nwork):
        m, past = r.work_m[i], r.work_past[i]
        tokens += m
        attn += m * past + m * (m + 1) // 2
    floor = hold(r, now, decode_seqs, decode_ctx, r.nwork, tokens, attn)
    return step(r.lt, r.le, r.limit, budget(r), decode_seqs, decode_ctx, r.nwork, tokens, attn, floor)


@njit(cache=True)
def _stretched_s(ct, ce, limit, batch, ctx_sum, steps):  # type: ignore[no-untyped-def]
    """Time (s) of a decode span whose steps over the cap last energy / cap (no clock ladder):
    `span` on each side of the one step where the implied power crosses the cap."""
    t = span(ct, batch, ctx_sum, steps)
    a_t, a_e = span_ends(ct, batch, ctx_sum, 1)[0], span_ends(ce, batch, ctx_sum, 1)[0]
    d0, d1 = a_e - limit * a_t, (ce[2] - limit * ct[2]) * batch
    if d1 == 0.0:
        lo, hi = (0, steps) if d0 > 0.0 else (0, 0)
    else:  # the crossing −d0/d1, clamped to [−1, steps] (the same lo and hi; no int64 overflow)
        x = min(max(-d0 / d1, -1.0), float(steps))
        if d1 > 0.0:  # throttled for i > −d0/d1
            lo, hi = max(0, math.floor(x) + 1), steps
        else:  # throttled for i < −d0/d1
            lo, hi = 0, min(steps, math.ceil(x))
    if lo >= hi:
        return t
    start = ctx_sum + lo * batch
    return t - span(ct, batch, start, hi - lo) + span(ce, batch, start, hi - lo) / limit


@njit(cache=True)
def _laddered(lt, le, limit, tau, batch, ctx_sum, steps, reach_s, floor):  # type: ignore[no-untyped-def]
    """Time (s), energy (J), peak power (W) and clock time (MHz·s: each segment's clock times its
    time) of a decode span whose steps each run at the lower clock of their power and time levels:
    the segments where both are constant, summed as series. With `reach_s` > 0, it stops in the
    segment where the time reaches it and returns, as its fifth value, the steps from the span's
    start to that step boundary (`steps_to_reach`). Held at ladder level `floor` (≥ 0), the time
    levels are not read and the power levels start there."""
    dt = de = peak = mhz_s = 0.0
    i = 0
    tau, floor = _free(tau, floor), max(floor, 0)
    p_end, p_level = run_end(lt, le, limit, tau, batch, ctx_sum, 0, steps, False, floor)
    t_end, t_level = run_end(lt, le, limit, tau, batch, ctx_sum, 0, steps, True, floor)
    while i < steps:
        end = min(p_end, t_end)
        level = max(p_level, t_level)
        n, start = end - i + 1, ctx_sum + i * batch
        run_s = span(lt[level], batch, start, n)
        if reach_s > 0.0 and dt + run_s >= reach_s:  # the boundary lies in this segment
            return dt, de, peak, mhz_s, i + min(reach(lt[level], batch, start, reach_s - dt), n)
        dt += run_s
        mhz_s += lt[level, CLOCK] * run_s
        de += span(le[level], batch, start, n)
        t0, t1 = span_ends(lt[level], batch, start, n)
        e0, e1 = span_ends(le[level], batch, start, n)
        peak = max(peak, e0 / t0 if t0 > 0.0 else 0.0, e1 / t1 if t1 > 0.0 else 0.0)
        i = end + 1
        if i < steps and p_end < i:
            p_end, p_level = run_end(lt, le, limit, tau, batch, ctx_sum, i, steps, False, floor)
        if i < steps and t_end < i:
            t_end, t_level = run_end(lt, le, limit, tau, batch, ctx_sum, i, steps, True, floor)
    return dt, de, peak, mhz_s, steps


@njit(cache=True)
def decode(lt, le, limit, tau, batch, ctx_sum, steps, floor=-1):  # type: ignore[no-untyped-def]
    """Time (s, under the cap and the controller: its budget `tau`, or the ladder level `floor` it
    holds), energy (J), peak step power (W), `extra` and clock time (MHz·s, the steps' SM clocks
    weighted by their times) of a decode span."""
    ct, ce = lt[0], le[0]
    a_t, l_t = span_ends(ct, batch, ctx_sum, steps)
    a_e, l_e = span_ends(ce, batch, ctx_sum, steps)
    de = steps * a_e + ce[2] * batch * steps * (steps - 1) * 0.5
    dt = steps * a_t + ct[2] * batch * steps * (steps - 1) * 0.5
    moe = steps * experts_at(ce, batch)
    shared = moe / ce[0] if moe != 0.0 else 0.0  # the experts' energy, in step constants
    over = _over(limit, a_t, a_e, l_t, l_e)
    if lt.shape[0] > 1 and (over or _slowed(tau, a_t, floor)):
        t, e, peak, mhz_s, _ = _laddered(lt, le, limit, tau, batch, ctx_sum, steps, 0.0, floor)
        return t, e, peak, (e - de + moe) / ce[0], mhz_s
    if over:
        dt = _stretched_s(ct, ce, limit, batch, ctx_sum, steps)
        a_t = a_e / limit if a_e - limit * a_t > 0.0 else a_t
        l_t = l_e / limit if l_e - limit * l_t > 0.0 else l_t
    p_first = a_e / a_t if a_t > 0.0 else 0.0
    p_last = l_e / l_t if l_t > 0.0 else 0.0
    return dt, de, p_first if p_first > p_last else p_last, shared, ct[CLOCK] * dt


@njit(cache=True)
def span_s(lt, le, limit, tau, batch, ctx_sum, steps, floor=-1):  # type: ignore[no-untyped-def]
    """Time (s) of `steps` decode steps under the power cap and the controller (`decode`'s, with
    the common case, no step over the cap and no budget to slow down to, first)."""
    t = span(lt[0], batch, ctx_sum, steps)
    if limit <= 0.0 and tau <= 0.0 and floor <= 0:
        return t
    if lt.shape[0] == 1:
        return _stretched_s(lt[0], le[0], limit, batch, ctx_sum, steps)
    a_t, l_t = span_ends(lt[0], batch, ctx_sum, steps)
    a_e, l_e = span_ends(le[0], batch, ctx_sum, steps)
    if not (_over(limit, a_t, a_e, l_t, l_e) or _slowed(tau, a_t, floor)):  # `decode`'s test
        return t
    return _laddered(lt, le, limit, tau, batch, ctx_sum, steps, 0.0, floor)[0]


@njit(cache=True)
def _throttled(ct, ce, limit, batch, ctx_sum, steps):  # type: ignore[no-untyped-def]
    """Whether any of these decode steps may draw more than the cap (power is monotone along a
    span: its ends decide; within 1e-9 counts, a false yes costs only time)."""
    a_t, l_t = span_ends(ct, batch, ctx_sum, steps)
    a_e, l_e = span_ends(ce, batch, ctx_sum, steps)
    return a_e - limit * a_t > -1e-9 * abs(a_e) or l_e - limit * l_t > -1e-9 * abs(l_e)


@njit(cache=True)
def steps_to_reach(lt, le, limit, tau, batch, ctx_sum, dt_s, floor=-1):  # type: ignore[no-untyped-def]
    """Smallest k ≥ 1 whose decode span, under the cap and the controller, lasts ≥ dt_s (s)."""
    k = reach(lt[0], batch, ctx_sum, dt_s)  # a lower clock only lengthens steps
    capped = limit > 0.0 and _throttled(lt[0], le[0], limit, batch, ctx_sum, k)
    if k <= 1 or (not capped and tau <= 0.0 and floor <= 0):
        return k
    if lt.shape[0] > 1:  # walk the span's segments to the one where dt_s is reached
        k = max(_laddered(lt, le, limit, tau, batch, ctx_sum, k, dt_s, floor)[4], 1)
        while k > 1 and span_s(lt, le, limit, tau, batch, ctx_sum, k - 1, floor) >= dt_s:
            k -= 1  # (the series of one segment and the sum over segments round apart by an ulp)
        while span_s(lt, le, limit, tau, batch, ctx_sum, k, floor) < dt_s:
            k += 1
        return k
    lo, hi = 1, k
    while lo < hi:
        mid = (lo + hi) // 2
        if span_s(lt, le, limit, tau, batch, ctx_sum, mid, floor) >= dt_s:
            hi = mid
        else:
            lo = mid + 1
    return lo

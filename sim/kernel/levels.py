"""The clock a step runs at, as a level of its clock ladder (`sim.kernel.costs`), compiled.

Under a power cap a step runs at the highest clock whose power fits (`power_level`); a frequency
controller runs it at the lowest clock that keeps it within its step budget (`time_level`,
`budget`); one that cannot switch at every step holds the clock it set for its switch latency
(`hold`). Power falls and time grows as the clock falls, so each level is found by bisection, and
along a decode span each level is monotone in the step, so its runs of one level are contiguous
(`run_end`). `missed` counts the decode steps whose budget even the full clock misses.
"""

from __future__ import annotations

import math

from numba import njit

from sim.kernel.linear import span_ends, step_value


@njit(cache=True)
def power_level(lt, le, limit, lo, decode_seqs, decode_ctx, prefill_seqs, tokens, attn):  # type: ignore[no-untyped-def]
    """The first ladder level from `lo` (the highest clock) at which a step with these features
    fits the cap (the last if none does; `lo` without a cap): power falls with the clock, so by
    bisection."""
    if limit <= 0.0:
        return lo
    hi = lt.shape[0] - 1
    while lo < hi:
        mid = (lo + hi) // 2
        e = step_value(le[mid], decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
        if e <= limit * step_value(lt[mid], decode_seqs, decode_ctx, prefill_seqs, tokens, attn):
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def time_level(lt, tau, lo, decode_seqs, decode_ctx, prefill_seqs, tokens, attn):  # type: ignore[no-untyped-def]
    """The last ladder level from `lo` (the lowest clock) at which a step with these features
    lasts at most `tau` (s; `lo` when even that clock is slower, or without a budget): time
    grows as the clock falls, so by bisection."""
    if tau <= 0.0:
        return lo
    hi = lt.shape[0] - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if step_value(lt[mid], decode_seqs, decode_ctx, prefill_seqs, tokens, attn) <= tau:
            lo = mid
        else:
            hi = mid - 1
    return lo


@njit(cache=True)
def decode_level(lt, le, limit, tau, batch, ctx, by_time, floor):  # type: ignore[no-untyped-def]
    """A decode step's power level from ladder level `floor` (or, `by_time`, its time level) at
    context sum ctx."""
    if by_time:
        return time_level(lt, tau, 0, batch, ctx, 0, 0, 0)
    return power_level(lt, le, limit, floor, batch, ctx, 0, 0, 0)


@njit(cache=True)
def run_end(lt, le, limit, tau, batch, ctx_sum, i, steps, by_time, floor):  # type: ignore[no-untyped-def]
    """The last step of the run from step i whose power (or, `by_time`, time) level is step i's:
    along a span each level is monotone in the step, so a run is contiguous (bisection)."""
    level = decode_level(lt, le, limit, tau, batch, ctx_sum + i * batch, by_time, floor)
    lo, hi = i, steps - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if decode_level(lt, le, limit, tau, batch, ctx_sum + mid * batch, by_time, floor) == level:
            lo = mid
        else:
            hi = mid - 1
    return lo, level


@njit(cache=True)
def budget(r):  # type: ignore[no-untyped-def]
    """The controller's step budget (s) for what starts now: `r.tau` while nothing waits in the
    queue, none (full clock) while requests wait: queueing is where time to first token is lost."""
    return r.tau if r.qlen == 0 else 0.0


@njit(cache=True)
def hold(r, now, decode_seqs, decode_ctx, prefill_seqs, tokens, attn):  # type: ignore[no-untyped-def]
    """The controller's ladder level for what starts at `now` (s) with these features, when it
    cannot switch freely (`r.switch` > 0 s, its switch latency): the level whose clock is the
    lowest keeping this step within the budget (full clock while requests wait), switched to only
    when the last switch is at least `r.switch` old; otherwise the clock it holds. −1 (switch
    freely, `tau` decides per step) without a switch latency or a controller."""
    if r.switch <= 0.0 or r.tau <= 0.0:
        return -1
    want = time_level(r.lt, budget(r), 0, decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
    if want != r.held and now >= r.held_until:
        r.held, r.held_until = want, now + r.switch
    return r.held


@njit(cache=True)
def missed(lt, tau, batch, ctx_sum, steps):  # type: ignore[no-untyped-def]
    """How many of `steps` decode steps (a span, contexts summing to `ctx_sum` at the first) take
    longer than the controller's budget `tau` (s) even at full clock (ladder row 0): steps whose
    budget no clock meets. Time grows along the span, so they are its last ones. (Steps that
    prefill are not counted: the budget is a decode step's, and they run at full clock anyway.)"""
    if tau <= 0.0:
        return 0
    a = span_ends(lt[0], batch, ctx_sum, 1)[0]  # the span's first step
    cb = lt[0, 2] * batch
    if a > tau:
        return steps
    if cb <= 0.0:
        return 0
    first = math.floor((tau - a) / cb) + 1  # the first step i with a + cb·i > tau
    while first > 0 and a + cb * (first - 1) > tau:  # (the division rounds: the series decides)
        first -= 1
    while first < steps and not a + cb * first > tau:
        first += 1
    return max(steps - first, 0)

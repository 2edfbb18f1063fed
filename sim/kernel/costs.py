"""Time (s) and energy (J) of serving steps and decode spans, compiled.

Coefficients come as a clock ladder: `lt` (s) and `le` (J) are (levels × 10) arrays of the step
coefficients (const, decode_seqs, decode_ctx, prefill_seqs, prefill_tokens, prefill_attn) at the
GPU's supported SM clocks from its own down (`oracle.clocks.ladder`), then a mixture of experts'
reads (`EXPERTS`: the cost of reading every routed expert once), the prefill overlap
(`oracle.model.Overlap`: `HIDE_WEIGHTS`, the weights' read a prefill can hide, and `HIDE_TOKEN`,
one prompt token's compute) and `LOG_UNTOUCHED` (the log of the chance that one token leaves a
given expert untouched, ln(1 − top_k / experts)) and `CLOCK`, the level's SM clock (MHz; 0 where
the GPU's clocks are unknown); row 0 is the clock it runs at.
`limit` is the power cap (W; 0: none).

A step of n tokens (decoded sequences plus prefilled prompt tokens) reads the routed experts its
tokens touch, an expected 1 − (1 − top_k / experts)^n of them (`experts_at`): shared by the step like its
constant, and like a clock's saving returned in `extra` (in step constants) so that requests'
charges add up to the step's energy. A dense model has EXPERTS = 0. A step prefilling n prompt
tokens hides min(HIDE_WEIGHTS, HIDE_TOKEN · n) of its shared cost (`hidden_at`: its weights are
read while its prompt computes), returned in `extra` the same way; without an overlap both are 0.

A step's time and energy are linear in its features. Between two events that change the batch,
B decoding sequences advance together and their context sum grows by B per step, so the time and
energy of k steps at one clock are arithmetic series (`span`). Under a power cap, a step that
would draw more than the cap runs, as the hardware does it, at the highest clock whose power fits
(a compute-bound prefill slows more than a memory-bound decode); its energy changes with the
clock, and the change is returned as `extra`, in units of the step's constant energy at row 0, so
that the engine splits it between the step's sequences as it splits the constant. A GPU with no
clock ladder (one row) is throttled as before clocks were modelled: the step lasts energy / cap.
Along a decode span, power at each clock is monotone in the step, so the steps throttled to each
clock form one run (found by bisection).

A frequency controller (`tau` > 0, s) lowers the clock further: each step runs at the lowest clock
whose step time stays within `tau` (never above the cap's clock; a step slower than `tau` at full
clock runs at full clock, or the cap's). Along a decode span that level falls as the contexts grow,
so its runs are found the same way, and each step runs at the lower clock of the two. A controller
that cannot switch at every step holds a clock instead (`floor` ≥ 0, a ladder level; −1: switch
freely): then each step runs at the held clock, or lower where the cap needs it, and `tau` is not
read (`hold` chooses the held level).

`sim.costs.StepCosts` calls these; the step-by-step reference (`server.exact_steps`) sums single
steps (`step`).
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
def _step(c, decode_seqs, decode_ctx, prefill_seqs, tokens, attn):  # type: ignore[no-untyped-def]
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
def _ends(c, batch, ctx_sum, steps):  # type: ignore[no-untyped-def]
    """The first and the last step's value (time s or energy J) of a decode span."""
    a = const_at(c, batch) + c[1] * batch
    return a + c[2] * ctx_sum, a + c[2] * (ctx_sum + (steps - 1) * batch)


@njit(cache=True, inline="always")
def _over(limit, a_t, a_e, l_t, l_e):  # type: ignore[no-untyped-def]
    """Whether the first (a) or last (l) step of a decode span draws more than the cap (step power
    is monotone along a span: its ends decide)."""
    return limit > 0.0 and (a_e - limit * a_t > 0.0 or l_e - limit * l_t > 0.0)


@njit(cache=True)
def step(lt, le, limit, tau, decode_seqs, decode_ctx, prefill_seqs, tokens, attn, floor=-1):  # type: ignore[no-untyped-def]
    """Time (s), energy (J), `extra` and SM clock (MHz) of one step with these summed features,
    under the cap `limit` (W) and the controller's step-time budget `tau` (s; 0: none), or at
    the held ladder level `floor` (≥ 0)."""
    de = _step(le[0], decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
    dt = _step(lt[0], decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
    apart = experts_at(le[0], decode_seqs + tokens) - hidden_at(le[0], tokens)  # the shared cost beside c0
    shared = apart / le[0, 0] if apart != 0.0 else 0.0  # in step constants
    over = limit > 0.0 and de > limit * dt
    if not over and floor <= 0 and (floor == 0 or tau <= 0.0 or dt > tau):
        return dt, de, shared, lt[0, CLOCK]
    last = lt.shape[0] - 1
    if last == 0:  # no clock ladder: stretched to energy / cap (no controller)
        return (de / limit if over else dt), de, shared, lt[0, CLOCK]
    x = (decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
    if floor >= 0:  # held: that clock, or lower where the cap needs it (at level 0 it did not fit)
        level = _power_level(lt, le, limit, max(floor, 1), *x)
    else:
        level = _power_level(lt, le, limit, 1, *x) if over else 0  # level 0 draws more than the cap
        level = _time_level(lt, tau, level, *x)
    if level == 0:
        return dt, de, shared, lt[0, CLOCK]
    e = _step(le[level], *x)
    return _step(lt[level], *x), e, (e - de + apart) / le[0, 0], lt[level, CLOCK]


@njit(cache=True)
def missed(lt, tau, batch, ctx_sum, steps):  # type: ignore[no-untyped-def]
    """How many of `steps` decode steps (a span, contexts summing to `ctx_sum` at the first) take
    longer than the controller's budget `tau` (s) even at full clock (ladder row 0): steps whose
    budget no clock meets. Time grows along the span, so they are its last ones. (Steps that
    prefill are not counted: the budget is a decode step's, and they run at full clock anyway.)"""
    if tau <= 0.0:
        return 0
    c = lt[0]
    a = const_at(c, batch) + c[1] * batch + c[2] * ctx_sum
    cb = c[2] * batch
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


@njit(cache=True)
def hold(r, now, decode_seqs, decode_ctx, prefill_seqs, tokens, attn):  # type: ignore[no-untyped-def]
    """The controller's ladder level for what starts at `now` (s) with these features, when it
    cannot switch freely (`r.switch` > 0 s, its switch latency): the level whose clock is the
    lowest keeping this step within the budget (full clock while requests wait), switched to only
    when the last switch is at least `r.switch` old; otherwise the clock it holds. −1 (switch
    freely, `tau` decides per step) without a switch latency or a controller."""
    if r.switch <= 0.0 or r.tau <= 0.0:
        return -1
    want = _time_level(r.lt, budget(r), 0, decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
    if want != r.held and now >= r.held_until:
        r.held, r.held_until = want, now + r.switch
    return r.held


@njit(cache=True)
def budget(r):  # type: ignore[no-untyped-def]
    """The controller's step budget (s) for what starts now: `r.tau` while nothing waits in the
    queue, none (full clock) while requests wait: queueing is where time to first token is lost."""
    return r.tau if r.qlen == 0 else 0.0


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
    a_t, a_e = _ends(ct, batch, ctx_sum, 1)[0], _ends(ce, batch, ctx_sum, 1)[0]
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
def _power_level(lt, le, limit, lo, decode_seqs, decode_ctx, prefill_seqs, tokens, attn):  # type: ignore[no-untyped-def]
    """The first ladder level from `lo` (the highest clock) at which a step with these features
    fits the cap (the last if none does; `lo` without a cap): power falls with the clock, so by
    bisection."""
    if limit <= 0.0:
        return lo
    hi = lt.shape[0] - 1
    while lo < hi:
        mid = (lo + hi) // 2
        e = _step(le[mid], decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
        if e <= limit * _step(lt[mid], decode_seqs, decode_ctx, prefill_seqs, tokens, attn):
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True)
def _time_level(lt, tau, lo, decode_seqs, decode_ctx, prefill_seqs, tokens, attn):  # type: ignore[no-untyped-def]
    """The last ladder level from `lo` (the lowest clock) at which a step with these features
    lasts at most `tau` (s; `lo` when even that clock is slower, or without a budget): time
    grows as the clock falls, so by bisection."""
    if tau <= 0.0:
        return lo
    hi = lt.shape[0] - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _step(lt[mid], decode_seqs, decode_ctx, prefill_seqs, tokens, attn) <= tau:
            lo = mid
        else:
            hi = mid - 1
    return lo


@njit(cache=True)
def _decode_level(lt, le, limit, tau, batch, ctx, by_time, floor):  # type: ignore[no-untyped-def]
    """A decode step's power level from ladder level `floor` (or, `by_time`, its time level) at
    context sum ctx."""
    if by_time:
        return _time_level(lt, tau, 0, batch, ctx, 0, 0, 0)
    return _power_level(lt, le, limit, floor, batch, ctx, 0, 0, 0)


@njit(cache=True)
def _run_end(lt, le, limit, tau, batch, ctx_sum, i, steps, by_time, floor):  # type: ignore[no-untyped-def]
    """The last step of the run from step i whose power (or, `by_time`, time) level is step i's:
    along a span each level is monotone in the step, so a run is contiguous (bisection)."""
    level = _decode_level(lt, le, limit, tau, batch, ctx_sum + i * batch, by_time, floor)
    lo, hi = i, steps - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _decode_level(lt, le, limit, tau, batch, ctx_sum + mid * batch, by_time, floor) == level:
            lo = mid
        else:
            hi = mid - 1
    return lo, level


@njit(cache=True)
def _laddered(lt, le, limit, tau, batch, ctx_sum, steps, reach_s, floor):  # type: ignore[no-untyped-def]
    """Time (s), energy (J), peak power (W) and clock time (MHz·s: each segment's clock times its
    time) of a decode span whose steps each run at the lower clock of their power and time levels:
    the segments where both are constant, summed as series. With `reach_s` > 0, it stops in the
    segment where the time reaches it and returns, as its fifth value, the steps from the span's
    start to that step boundary (`steps_to_reach`). Held at ladder level `floor` (≥ 0), the time
    levels are not read (`tau` is 0) and the power levels start there."""
    dt = de = peak = mhz_s = 0.0
    i = 0
    floor = max(floor, 0)
    p_end, p_level = _run_end(lt, le, limit, tau, batch, ctx_sum, 0, steps, False, floor)
    t_end, t_level = _run_end(lt, le, limit, tau, batch, ctx_sum, 0, steps, True, floor)
    while i < steps:
        end = min(p_end, t_end)
        level = max(p_level, t_level)
        n, start = end - i + 1, ctx_sum + i * batch
        run_s = span(lt[level], batch, start, n)
        if reach_s > 0.0 and dt + run_s >= reach_s:  # the boundary lies in this segment
            return dt, de, peak, mhz_s, i + min(_reach(lt[level], batch, start, reach_s - dt), n)
        dt += run_s
        mhz_s += lt[level, CLOCK] * run_s
        de += span(le[level], batch, start, n)
        t0, t1 = _ends(lt[level], batch, start, n)
        e0, e1 = _ends(le[level], batch, start, n)
        peak = max(peak, e0 / t0 if t0 > 0.0 else 0.0, e1 / t1 if t1 > 0.0 else 0.0)
        i = end + 1
        if i < steps and p_end < i:
            p_end, p_level = _run_end(lt, le, limit, tau, batch, ctx_sum, i, steps, False, floor)
        if i < steps and t_end < i:
            t_end, t_level = _run_end(lt, le, limit, tau, batch, ctx_sum, i, steps, True, floor)
    return dt, de, peak, mhz_s, steps


@njit(cache=True)
def decode(lt, le, limit, tau, batch, ctx_sum, steps, floor=-1):  # type: ignore[no-untyped-def]
    """Time (s, under the cap and the controller: its budget `tau`, or the ladder level `floor` it
    holds), energy (J), peak step power (W), `extra` and clock time (MHz·s, the steps' SM clocks
    weighted by their times) of a decode span."""
    ct, ce = lt[0], le[0]
    a_t, l_t = _ends(ct, batch, ctx_sum, steps)
    a_e, l_e = _ends(ce, batch, ctx_sum, steps)
    de = steps * a_e + ce[2] * batch * steps * (steps - 1) * 0.5
    dt = steps * a_t + ct[2] * batch * steps * (steps - 1) * 0.5
    moe = steps * experts_at(ce, batch)
    shared = moe / ce[0] if moe != 0.0 else 0.0  # the experts' energy, in step constants
    over = _over(limit, a_t, a_e, l_t, l_e)
    if lt.shape[0] > 1 and (over or _slowed(tau, a_t, floor)):
        t, e, peak, mhz_s, _ = _laddered(lt, le, limit, _free(tau, floor), batch, ctx_sum, steps, 0.0, floor)
        return t, e, peak, (e - de + moe) / ce[0], mhz_s
    if over:
        dt = _stretched_s(ct, ce, limit, batch, ctx_sum, steps)
        a_t = a_e / limit if a_e - limit * a_t > 0.0 else a_t
        l_t = l_e / limit if l_e - limit * l_t > 0.0 else l_t
    p_first = a_e / a_t if a_t > 0.0 else 0.0
    p_last = l_e / l_t if l_t > 0.0 else 0.0
    return dt, de, p_first if p_first > p_last else p_last, shared, ct[CLOCK] * dt


@njit(cache=True, inline="always")
def _slowed(tau, first_s, floor):  # type: ignore[no-untyped-def]
    """Whether the controller slows a decode span: it holds a level below full clock, or, free to
    switch, its budget leaves room at the span's first step (time grows along a span)."""
    return floor > 0 or (floor < 0 and tau > 0.0 and first_s <= tau)


@njit(cache=True, inline="always")
def _free(tau, floor):  # type: ignore[no-untyped-def]
    """The budget the step-by-step time levels read: none while the controller holds a level."""
    return tau if floor < 0 else 0.0


@njit(cache=True)
def span_s(lt, le, limit, tau, batch, ctx_sum, steps, floor=-1):  # type: ignore[no-untyped-def]
    """Time (s) of `steps` decode steps under the power cap and the controller (`decode`'s, with
    the common case, no step over the cap and no budget to slow down to, first)."""
    t = span(lt[0], batch, ctx_sum, steps)
    if limit <= 0.0 and tau <= 0.0 and floor <= 0:
        return t
    if lt.shape[0] == 1:
        return _stretched_s(lt[0], le[0], limit, batch, ctx_sum, steps)
    a_t, l_t = _ends(lt[0], batch, ctx_sum, steps)
    a_e, l_e = _ends(le[0], batch, ctx_sum, steps)
    if not (_over(limit, a_t, a_e, l_t, l_e) or _slowed(tau, a_t, floor)):  # `decode`'s test
        return t
    return _laddered(lt, le, limit, _free(tau, floor), batch, ctx_sum, steps, 0.0, floor)[0]


@njit(cache=True)
def _reach(c, batch, ctx_sum, dt_s):  # type: ignore[no-untyped-def]
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


@njit(cache=True)
def _throttled(ct, ce, limit, batch, ctx_sum, steps):  # type: ignore[no-untyped-def]
    """Whether any of these decode steps may draw more than the cap (power is monotone along a
    span: its ends decide; within 1e-9 counts, a false yes costs only time)."""
    a_t, l_t = _ends(ct, batch, ctx_sum, steps)
    a_e, l_e = _ends(ce, batch, ctx_sum, steps)
    return a_e - limit * a_t > -1e-9 * abs(a_e) or l_e - limit * l_t > -1e-9 * abs(l_e)


@njit(cache=True)
def steps_to_reach(lt, le, limit, tau, batch, ctx_sum, dt_s, floor=-1):  # type: ignore[no-untyped-def]
    """Smallest k ≥ 1 whose decode span, under the cap and the controller, lasts ≥ dt_s (s)."""
    k = _reach(lt[0], batch, ctx_sum, dt_s)  # a lower clock only lengthens steps
    capped = limit > 0.0 and _throttled(lt[0], le[0], limit, batch, ctx_sum, k)
    if k <= 1 or (not capped and tau <= 0.0 and floor <= 0):
        return k
    if lt.shape[0] > 1:  # walk the span's segments to the one where dt_s is reached
        k = max(_laddered(lt, le, limit, _free(tau, floor), batch, ctx_sum, k, dt_s, floor)[4], 1)
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

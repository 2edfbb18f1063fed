"""The event loop of a replica fed all its jobs up front (`sim.server.Server.feed(alone=True)`).

Each event is a plain decode span (to the next completion, window saturation, KV shortage or
arrival that could join), a step that prefills (or preempts), or an idle wait to the next
arrival. The loop logs one span row per event in `r.rows_f` / `r.rows_i` (`sim.ledger.Ledger.advance`'s
values) and moves the clock with Neumaier compensation. It returns at the end of the feed, after
`events` events, when the span-row buffer holds `rows` rows, or when the preemption log may not
hold another step's preemptions; the caller moves the buffers into the ledger and job table.
"""

from __future__ import annotations

import math

from numba import njit

from sim.kernel import costs
from sim.kernel.rules import accepts_arrivals, can_span, enqueue, finish_step, form_step, run_span, span_limit
from sim.ledger import RECENT

PAUSED, FINISHED = 0, 1


@njit(cache=True)
def _advance(r, dt, de, steps, peak_w, running, tokens):  # type: ignore[no-untyped-def]
    """Log a span and move the clock past it (`sim.ledger.Ledger.advance`)."""
    t, tc, i = r.t, r.tc, r.nrows
    r.rows_f[i, 0], r.rows_f[i, 1], r.rows_f[i, 2], r.rows_f[i, 3] = t + tc, dt, de, peak_w
    r.rows_f[i, 4] = r.used / r.cap
    r.rows_i[i, 0], r.rows_i[i, 1], r.rows_i[i, 2] = steps, running, tokens
    r.nrows = i + 1
    v = t + dt
    r.tc = tc + ((t - v) + dt if t >= dt else (dt - v) + t)
    r.t = v
    r.step_avg += (1.0 - math.pow(RECENT, steps)) * (dt / steps - r.step_avg)
    if peak_w > r.peak_w:
        r.peak_w = peak_w


@njit(cache=True)
def _span_steps(r, now):  # type: ignore[no-untyped-def]
    """Steps of the next decode span: to the engine's limit or the next arrival that could join."""
    k = span_limit(r)
    if k > 1 and r.fi < r.ft.size and accepts_arrivals(r):
        reach = costs.steps_to_reach(r, r.B, r.S, r.ft[r.fi] - now)
        if reach < k:
            return reach
    return k


@njit(cache=True)
def run_alone(r, events, rows):  # type: ignore[no-untyped-def]
    """Run up to `events` events of the feed (see the module docstring): (FINISHED or PAUSED,
    the events left of `events`)."""
    ft, fj, n = r.ft, r.fj, r.ft.size
    log_room = r.plog.shape[0] - r.work_j.size  # a step preempts fewer sequences than run
    while True:
        if events <= 0 or r.nrows >= rows or r.nlog > log_room:
            return PAUSED, events
        events -= 1
        now = r.t + r.tc
        while r.fi < n and ft[r.fi] <= now:
            enqueue(r, fj[r.fi])
            r.fi += 1
        if can_span(r):
            B, S = r.B, r.S
            k = _span_steps(r, now)
            dt, de, peak = costs.decode(r, B, S, k)
            run_span(r, k)
            _advance(r, dt, de, k, peak, B, B * k)
            first = 0
        elif r.B or r.part_j >= 0 or r.qlen:
            form_step(r, now)
            B = r.B
            dt, de = costs.mixed(r, B, r.S)
            finish_step(r)
            _advance(r, dt, de, 1, de / dt if dt > 0.0 else 0.0, B + r.nwork, B + r.prefilled)
            first = r.nfirst
        elif r.fi < n:
            if ft[r.fi] > now:
                r.t, r.tc = ft[r.fi], 0.0
            continue
        else:
            return FINISHED, events
        t = r.t + r.tc
        for i in range(first):
            r.first_s[r.first[i]] = t
        for i in range(r.ndone):
            r.finish_s[r.done[i]] = t

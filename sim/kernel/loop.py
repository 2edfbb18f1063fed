"""A replica's events, and the event loop of a replica fed all its jobs up front.

An event is a plain decode span (to the next completion, window saturation, KV shortage or
arrival that could join), a step that prefills (or preempts), or an idle wait for the next
arrival. A span's steps run when it closes (`close_span`); a step is formed when it opens
(`open_step`: admissions and preemptions happen then) and run when it closes (`close_step`).
Closing logs one span row in `r.rows_f` / `r.rows_i` (`sim.engine.ledger.Ledger.advance`'s values),
moves the clock with Neumaier compensation and stamps first tokens and completions.

`run_alone` runs the events of a replica fed alone (`sim.serving.server.Server.feed(alone=True)`) as
`Server._replay` does; `sim.kernel.fleet` runs a routed fleet's.
"""

from __future__ import annotations

import math

from numba import njit

from sim.engine.ledger import RECENT
from sim.kernel import costs, levels
from sim.kernel.admission import accepts_arrivals, can_span, enqueue, form_step
from sim.kernel.decoding import finish_step, run_span, span_limit
from sim.kernel.state import log_full

PAUSED, FINISHED = 0, 1


@njit(cache=True)
def _advance(r, dt, de, steps, peak_w, running, tokens, mhz_s):  # type: ignore[no-untyped-def]
    """Log a span and move the clock past it (`sim.engine.ledger.Ledger.advance`)."""
    t, tc, i = r.t, r.tc, r.nrows
    r.rows_f[i, 0], r.rows_f[i, 1], r.rows_f[i, 2], r.rows_f[i, 3] = t + tc, dt, de, peak_w
    r.rows_f[i, 4], r.rows_f[i, 5] = r.used / r.cap, mhz_s
    r.rows_i[i, 0], r.rows_i[i, 1], r.rows_i[i, 2] = steps, running, tokens
    r.nrows = i + 1
    v = t + dt
    r.tc = tc + ((t - v) + dt if t >= dt else (dt - v) + t)
    r.t = v
    r.step_avg += (1.0 - math.pow(RECENT, steps)) * (dt / steps - r.step_avg)
    if peak_w > r.peak_w:
        r.peak_w = peak_w


@njit(cache=True)
def _stamp(r, first):  # type: ignore[no-untyped-def]
    """Stamp the event's first tokens (the first `first` of `r.first`) and completions with the clock."""
    t = r.t + r.tc
    for i in range(first):
        r.first_s[r.first[i]] = t
    for i in range(r.ndone):
        r.finish_s[r.done[i]] = t


@njit(cache=True)
def close_span(r, B, S, k, tau, floor):  # type: ignore[no-untyped-def]
    """Run k plain decode steps of B decoders whose contexts summed to S, under the controller's
    budget `tau` (s) or at the ladder level it held (`floor`), as when they started
    (`sim.serving.steps.Steps.end_decode`)."""
    dt, de, peak, extra, mhz_s = costs.decode(r.lt, r.le, r.limit, tau, B, S, k, floor)
    r.missed += levels.missed(r.lt, tau, B, S, k)
    run_span(r, k, extra)
    _advance(r, dt, de, k, peak, B, B * k, mhz_s)
    _stamp(r, 0)


@njit(cache=True)
def open_step(r, now):  # type: ignore[no-untyped-def]
    """Form the next step at clock `now` (s); its time (s), energy (J), `extra` and SM clock (MHz)
    (`costs.step`)."""
    form_step(r, now)
    return costs.mixed(r, now, r.B, r.S)


@njit(cache=True)
def close_step(r, dt, de, extra, mhz):  # type: ignore[no-untyped-def]
    """Run the step `open_step` formed, of time dt (s), energy de (J) at SM clock `mhz` (MHz)
    (`sim.serving.steps.Steps.end_mixed`)."""
    B = r.B
    finish_step(r, extra)
    _advance(r, dt, de, 1, de / dt if dt > 0.0 else 0.0, B + r.nwork, B + r.prefilled, mhz * dt)
    _stamp(r, r.nfirst)


@njit(cache=True)
def _span_steps(r, now, tau, floor):  # type: ignore[no-untyped-def]
    """Steps of the next decode span: to the engine's limit or the next arrival that could join."""
    k = span_limit(r)
    if k > 1 and r.fi < r.ft.size and accepts_arrivals(r):
        reach = costs.steps_to_reach(r.lt, r.le, r.limit, tau, r.B, r.S, r.ft[r.fi] - now, floor)
        if reach < k:
            return reach
    return k


@njit(cache=True, nogil=True)
def run_alone(r, events, rows):  # type: ignore[no-untyped-def]
    """Run up to `events` events of the feed; returns (FINISHED or PAUSED, the events left). It
    pauses early when `rows` span rows wait or the preemption log may not hold another step's."""
    ft, n = r.ft, r.ft.size
    while True:
        if events <= 0 or r.nrows >= rows or log_full(r):
            return PAUSED, events
        events -= 1
        now = r.t + r.tc
        while r.fi < n and ft[r.fi] <= now:
            enqueue(r, r.fj[r.fi] if r.fj.size else r.f0 + r.fi)
            r.fi += 1
        if can_span(r):
            tau, floor = levels.budget(r), levels.hold(r, now, r.B, r.S, 0, 0, 0)
            close_span(r, r.B, r.S, _span_steps(r, now, tau, floor), tau, floor)
        elif r.B or r.part_j >= 0 or r.qlen:
            dt, de, extra, mhz = open_step(r, now)
            close_step(r, dt, de, extra, mhz)
        elif r.fi < n:
            if ft[r.fi] > now:
                r.t, r.tc = ft[r.fi], 0.0
        else:
            return FINISHED, events

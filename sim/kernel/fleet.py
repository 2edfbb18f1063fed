"""The event loop of a routed fleet: arrivals routed one instant at a time to replicas whose
waits end on one event clock, as under SimPy (`sim.serving.wiring._Dispatcher` and `sim.serving.server.Server`).

Events are ordered as SimPy orders its timeouts: by time, then by the order they were scheduled
(a sequence number, `eid`), their times computed with SimPy's arithmetic (`now + max(until −
now, 0)`), so that events of the same instant come in the same order and the same arrivals join
the same steps. At an arrival instant every arrival due is routed (`picks.pick`) and offered
(`Server.offer`): queued, or rejected; a replica that is idle, or could have admitted it at its
next step boundary, is woken once the instant's arrivals are all routed and the next arrival is
scheduled (`Server.wake`): an idle one starts at the arrival's time, a decode span is cut at the
first step boundary after it, a step runs to its end. A replica's wait ends (`Server._ring`)
with its span or step closed (`sim.kernel.loop`) and the next one started (`Server._next`).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.experimental import structref

from sim.kernel import costs, levels
from sim.kernel.admission import accepts_arrivals, can_span, enqueue
from sim.kernel.decoding import span_limit
from sim.kernel.lists import heap_pop, heap_push
from sim.kernel.loop import FINISHED, PAUSED, close_span, close_step, open_step
from sim.kernel.picks import pick
from sim.kernel.routers import note
from sim.kernel.state import log_full

IDLE, DECODE, MIXED = 0, 1, 2  # what a replica's wait ends (`sim.serving.server`'s phases)

_FIELDS = [
    ("router", types.int64), ("i", types.int64), ("eid", types.int64), ("arr_eid", types.int64),
    ("has_arrival", types.int64), ("hn", types.int64), ("nwoken", types.int64), ("started", types.int64),
    ("now", types.float64), ("arr_env", types.float64), ("ttft_s", types.float64), ("tpot_s", types.float64),
    ("cache_balance", types.float64),
    ("times", types.float64[::1]), ("server_of", types.int16[::1]), ("hk", types.float64[::1]),
    ("he", types.int64[::1]), ("hr", types.int64[::1]), ("woken", types.int64[::1]), ("woken_at", types.float64[::1]),
    ("pool_lo", types.int64[::1]), ("pool_hi", types.int64[::1]), ("pool_in", types.int64[::1]),
    ("pool_out", types.int64[::1]), ("pool_tokens", types.int64[::1]), ("pool_shared_j", types.float64[::1]),
    ("rooms", types.int64[::1]), ("live", types.int64[::1]), ("load", types.int64[::1]),
    ("finish", types.int64[::1]),
]  # fmt: skip


@structref.register
class FleetType(types.StructRef):
    def preprocess_fields(self, fields):  # type: ignore[no-untyped-def]
        return tuple((name, types.unliteral(t)) for name, t in fields)


class FleetState(structref.StructRefProxy):
    """A routed fleet's event clock, arrivals and router settings (read in compiled code)."""


structref.define_boxing(FleetType, FleetState)
FLEET = FleetType(_FIELDS)


@njit(cache=True)
def new_fleet(router, times, server_of, replicas, pools, ttft_s, tpot_s, cache_balance):  # type: ignore[no-untyped-def]
    """A fleet of `replicas` with `router` (its code in `sim.kernel.picks`) over arrivals at `times` (s;
    arrival i is job i); `pools` = (first replica, end, max input tokens, max output tokens,
    max_num_tokens (0: none), shared step energy above idle (J)) per pool; SLO bounds (s); the
    cache-aware router's weight of load against cached share."""
    f = structref.new(FLEET)
    f.router, f.times, f.server_of, f.ttft_s, f.tpot_s = router, times, server_of, ttft_s, tpot_s
    f.cache_balance = cache_balance
    f.pool_lo, f.pool_hi, f.pool_in, f.pool_out, f.pool_tokens, f.pool_shared_j = pools
    f.i = f.eid = f.arr_eid = f.hn = f.nwoken = f.started = 0
    f.has_arrival = 1 if times.size else 0
    f.now = f.arr_env = 0.0
    size = 4 * replicas + 16
    f.hk, f.he, f.hr = np.zeros(size), np.zeros(size, np.int64), np.zeros(size, np.int64)
    f.woken, f.woken_at = np.zeros(replicas, np.int64), np.zeros(replicas)
    f.rooms = np.ones(replicas, np.int64)
    f.live = np.full(replicas, -1, np.int64)  # the sequence number of each replica's wait (-1: idle)
    f.load, f.finish = np.zeros(replicas, np.int64), np.zeros(replicas, np.int64)  # (`routers.note`)
    f.eid = 1  # 0 is the first arrival's (`_Dispatcher`'s timeout(0))
    return f


@njit(cache=True)
def rooms_of(f):  # type: ignore[no-untyped-def]
    """The per-replica span-row limits, written in place by the caller before each run."""
    return f.rooms


@njit(cache=True)
def now_s(f):  # type: ignore[no-untyped-def]
    """The event clock (s): the time of the event under way."""
    return f.now


@njit(cache=True, inline="always")
def _before(a0, a1, b0, b1):  # type: ignore[no-untyped-def]
    return a0 < b0 or (a0 == b0 and a1 < b1)


@njit(cache=True)
def _push(f, t, eid, k):  # type: ignore[no-untyped-def]
    """Schedule replica k's wait ending at event time t with sequence number eid (the wait heap
    orders (t, eid, k) as `sim.kernel.lists`' heaps do; eids are distinct, so k never decides)."""
    if f.hn == f.hk.size:  # drop superseded waits (a wake-up scheduled their replica anew)
        n, f.hn = f.hn, 0
        hk, he, hr = f.hk.copy(), f.he.copy(), f.hr.copy()
        for x in range(n):
            if he[x] == f.live[hr[x]]:
                heap_push(f.hk, f.he, f.hr, f.hn, hk[x], he[x], hr[x])
                f.hn += 1
    heap_push(f.hk, f.he, f.hr, f.hn, t, eid, k)
    f.hn += 1


@njit(cache=True)
def _pop(f):  # type: ignore[no-untyped-def]
    """Remove the earliest wait (the caller read it)."""
    heap_pop(f.hk, f.he, f.hr, f.hn)
    f.hn -= 1


@njit(cache=True)
def _sleep(f, r, k, env_now, until):  # type: ignore[no-untyped-def]
    """Replica k waits to its clock time `until` (s): an event at SimPy's time for it."""
    r.env_end = env_now + max(until - env_now, 0.0)
    r.eid = f.live[k] = f.eid
    f.eid += 1
    _push(f, r.env_end, r.eid, k)


@njit(cache=True)
def _next(f, r, k, env_now):  # type: ignore[no-untyped-def]
    """Start what comes next at the replica's clock: a decode span, a step or an idle wait."""
    now = r.t + r.tc
    if can_span(r):
        B, S = r.B, r.S
        steps = span_limit(r)
        r.phase, r.w_B, r.w_S, r.w_t0, r.w_k, r.w_tau = DECODE, B, S, now, steps, levels.budget(r)
        r.w_floor = levels.hold(r, now, B, S, 0, 0, 0)
        _sleep(f, r, k, env_now, now + costs.span_s(r.lt, r.le, r.limit, r.w_tau, B, S, steps, r.w_floor))
    elif r.B or r.part_j >= 0 or r.qlen:
        dt, de, extra, mhz = open_step(r, now)
        r.phase, r.w_dt, r.w_de, r.w_extra, r.w_mhz, r.w_end = MIXED, dt, de, extra, mhz, now + dt
        _sleep(f, r, k, env_now, r.w_end)
    else:
        r.phase, r.idle, r.eid = IDLE, 1, -1
        f.live[k] = -1


@njit(cache=True)
def _ring(f, r, k, env_now):  # type: ignore[no-untyped-def]
    """Replica k's wait ended: close its span or step, start the next."""
    if r.phase == DECODE:
        close_span(r, r.w_B, r.w_S, r.w_k, r.w_tau, r.w_floor)
    else:
        close_step(r, r.w_dt, r.w_de, r.w_extra, r.w_mhz)
    _next(f, r, k, env_now)
    note(f, r, k)


@njit(cache=True)
def _wake(f, r, k, at, env_now):  # type: ignore[no-untyped-def]
    """A submit at `at` (s) woke replica k (`Server.wake`)."""
    r.interrupted = 0
    if r.phase == DECODE:
        reach = costs.steps_to_reach(r.lt, r.le, r.limit, r.w_tau, r.w_B, r.w_S, at - r.w_t0, r.w_floor)
        r.w_k = min(r.w_k, reach)
        _sleep(f, r, k, env_now, r.w_t0 + costs.span_s(r.lt, r.le, r.limit, r.w_tau, r.w_B, r.w_S, r.w_k, r.w_floor))
    elif r.phase == MIXED:
        _sleep(f, r, k, env_now, r.w_end)  # a step is atomic: arrivals wait for its end
    else:
        r.idle = 0
        if at > r.t + r.tc:
            r.t, r.tc = at, 0.0
        _next(f, r, k, env_now)


@njit(cache=True)
def _arrive(f, reps):  # type: ignore[no-untyped-def]
    """Route every arrival due now, schedule the next arrival, then wake the replicas to wake."""
    now, times = f.arr_env, f.times
    f.now = now
    while f.i < times.size and times[f.i] <= now:
        j = f.i
        r0 = reps[0]
        k = pick(f, reps, j, r0.n_in[j], r0.n_out[j])
        r = reps[k]
        f.server_of[j] = k
        room = accepts_arrivals(r)
        accepted = enqueue(r, j)
        note(f, r, k)
        if accepted and not r.interrupted:
            r.interrupted = 1 if r.idle or room else 0
            if r.interrupted:
                f.woken[f.nwoken], f.woken_at[f.nwoken] = k, times[j]
                f.nwoken += 1
        f.i += 1
    if f.i < times.size:
        f.arr_env = now + (times[f.i] - now)
        f.arr_eid = f.eid
        f.eid += 1
    else:
        f.has_arrival = 0
    full = False
    for w in range(f.nwoken):
        k = f.woken[w]
        r = reps[k]
        _wake(f, r, k, f.woken_at[w], now)
        note(f, r, k)
        full |= _full(f, r, k)
    f.nwoken = 0
    return full


@njit(cache=True, inline="always")
def _full(f, r, k):  # type: ignore[no-untyped-def]
    """Whether replica k's span rows reached its room or its preemption log may not hold another step's."""
    return r.nrows >= f.rooms[k] or log_full(r)


@njit(cache=True, nogil=True)
def run_fleet(f, reps, instants):  # type: ignore[no-untyped-def]
    """Run the fleet's events up to `instants` arrival instants; PAUSED early when a replica's
    span rows reach `f.rooms` or its preemption log may not hold another step's; FINISHED at
    the last event."""
    while True:
        while f.hn and f.he[0] != f.live[f.hr[0]]:
            _pop(f)  # a wait a wake-up superseded
        if f.hn and (not f.has_arrival or _before(f.hk[0], f.he[0], f.arr_env, f.arr_eid)):
            t, k = f.hk[0], f.hr[0]
            _pop(f)
            f.now = t
            r = reps[k]
            _ring(f, r, k, t)
            if _full(f, r, k):
                return PAUSED
        elif f.has_arrival:
            if instants <= 0:
                return PAUSED
            instants -= 1
            if _arrive(f, reps):
                return PAUSED
        else:
            return FINISHED

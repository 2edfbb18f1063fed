"""The replay loop of a server fed alone, fused: `Server._replay` with its common events inlined.

A server fed all its jobs up front runs its events one after the other in a plain loop. Each
event there is a handful of small calls (`Engine.can_span`, `span_limit`, `run_span`,
`form_step`, `finish_step`, `StepCosts.decode`, `mixed`, `steps_to_reach`, `Ledger.advance`,
`Server._emit`), and at a million requests the calls and attribute reads, not the arithmetic,
are most of the run. `replay` runs the same events with the common cases of those functions
copied inline (each copy names the function it copies; the float operations are the same, in
the same order, so records and span logs are bit for bit those of `Server._replay`) and calls
the general methods for the rare ones: preemption, a prompt mid-prefill, sliding-window
saturation, a step at the power limit, a KV shortage within a span. Besides:
- the clock, the ledger's totals and the hot engine counters live in local variables, and span
  rows are buffered in a list and packed into the ledger's arrays 1,024 at a time (`_flush`);
- job columns are written through memoryviews (`_items`);
- a span whose power stays well under the limit skips `StepCosts._throttled` (see `cool`), a
  span that ends before the next arrival skips `steps_to_reach`, and a one-step span skips its
  last-step terms (the same values);
- the heap top is checked for a stale entry only once a decoder has been preempted;
- `Engine.can_span`'s check of the queue's head is the admission itself: a step prefills
  whatever `Engine._admit` takes, and a span runs when it takes nothing;
- when no job of the feed can be rejected (`Engine.rejects`), arrivals join the queue directly;
- the sums only a router reads (`Engine.pending`, `queued_need`, `queued_prompt`, `fsum`) are
  not kept during the loop (an alone server has no router) and are zero at its end, as they
  would be: nothing is left queued or decoding.
It serves the fast mode with no listener (`fits`); `Server._replay` serves the rest and is what
`tests/sim/test_replay.py` checks this against.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Callable, Sequence
from heapq import heappop, heappush
from typing import TYPE_CHECKING, Any

import numpy as np

from sim.costs import steps_to_reach
from sim.jobs import DONE
from sim.ledger import RECENT

if TYPE_CHECKING:
    from sim.engine import Prefill
    from sim.ledger import Ledger
    from sim.server import Server

_NO_JOBS: tuple[int, ...] = ()
_STALE = (-1, 0, 0)  # `Engine.decoders`' entry of a job that does not decode
_DECAY_1 = 1.0 - RECENT**1  # `Ledger.advance`'s decay for a one-step span
_NO_WORK: Prefill = []  # a decode span's prefill work (never appended to)
_GENERAL: Prefill = []  # marks a step the general methods ran


def fits(server: Server) -> bool:
    """Whether `replay` can run the server: the fast mode, nothing listening to it, and a
    scheduler whose admission is the plain rule this loop inlines."""
    listeners = (server.on_change, server.on_finish, server.on_reject)
    plain = server.engine.scheduler.plain_admission()
    return plain and not (server._exact or server._record) and all(f is None for f in listeners)


def replay(server: Server, events: int = 1 << 62) -> bool:
    """The server's feed's events, as `Server._replay` runs them (for a server that `fits`), up
    to `events` of them; whether it has run them all. Between two calls the engine and ledger
    hold the loop's state, except the sums only a router reads (see the module docstring)."""
    assert fits(server)
    e, ledger, costs, jobs, kv = server.engine, server.ledger, server.costs, server.jobs, server.kv
    ft, fj, n, fi = server._ftimes, server._fjobs, len(server._ftimes), server._fi
    ct, ce, limit = costs.time_s, costs.energy_j, costs.power_limit_w
    t0, t1, t2, t3, t4, t5 = ct
    e0, e1, e2, e3, e4, e5 = ce
    phases, queue, order, dec, heap, sat = e.phases, e.queue, e.order, e.decoders, e._heap, e._sat
    weights, bs, cap, units = phases.weights, e._bs, e.cap, e.units
    max_seqs, max_tokens, chunked, reserve, static = e.max_seqs, e.max_tokens, e.chunked, e.reserve, e.static
    # Step power along a decode span moves monotonically from its first step's towards e2 / t2:
    # a span whose first step and that limit are both well under the power limit never
    # throttles, and `StepCosts._throttled` (which decides within 1e-9) need not be asked.
    limit_w = 0.0 if limit is None else limit  # read only where limit is not None
    safe_w = limit_w * (1.0 - 1e-6)
    # With these signs every span has a_t, a_e > 0 and c2b >= 0 (below); then `cool` says that
    # step power tends to under the limit, and a span starting under it stays under it.
    positive = min(t0, e0) > 0.0 and min(t1, t2, e1, e2) >= 0.0
    cool = positive and e2 < safe_w * t2
    full, flat = kv.full_units, kv.window_units == 0  # flat: `KvLayout.units_fn`'s formula holds
    n_in, n_out, generated = jobs.n_in, jobs.n_out, jobs.generated
    share_of, status, first_s, finish_s = (
        _items(jobs.share),
        _items(jobs.status),
        _items(jobs.first_s),
        _items(jobs.finish_s),
    )
    admit_s, chunks = _items(jobs.admit_s), _items(jobs.chunks)
    t, tc, step_avg, peak_w = ledger.t, ledger.tc, ledger.step_avg, ledger.peak_w
    now = t + tc  # the clock (s)
    rows: list[float] = []  # span rows not yet in the ledger's log, 8 values each (`_flush`)
    room = room_for(ledger)
    nxt = ft[fi] if fi < n else math.inf  # the next arrival's time (s)
    checked = server.may_reject  # whether `Engine.enqueue` may reject a job of the feed
    B, N, S, used, share, share_c, part = e.B, e.N, e.S, e.used, e.share, e.share_c, e.partial
    stale = e.preemptions > 0  # whether the heap may hold stale entries (a preempted decoder's)
    first: Sequence[int]
    done: Sequence[int]
    no_jobs, no_work, general, ceil, sqrt, done_code = _NO_JOBS, _NO_WORK, _GENERAL, math.ceil, math.sqrt, DONE
    decay_1, inf = _DECAY_1, math.inf
    while True:
        if not events:  # a pause between two events: the state back where the methods keep it
            e.B, e.N, e.S, e.used, e.share, e.share_c = B, N, S, used, share, share_c
            ledger.t, ledger.tc, ledger.step_avg, ledger.peak_w = t, tc, step_avg, peak_w
            _flush(ledger, rows)
            server._fi = fi
            return False
        events -= 1
        if nxt <= now and fi < n:  # `Server._pull` and `Engine.enqueue`, inlined
            while True:
                if checked:
                    e.enqueue(fj[fi])
                else:
                    queue.append(fj[fi])  # `Engine.enqueue`, which would accept it
                fi += 1
                nxt = ft[fi] if fi < n else inf
                if nxt > now:
                    break
        step_need = weights[-N % bs]  # KV units the decoders allocate in the next step
        free = cap - used - step_need
        if part is None and free >= 0:  # no chunk to continue, no preemption
            work = no_work
            if queue and not (static and order):  # `Engine._admit`, inlined
                # (it admits the head iff `Engine.can_span`'s `_head_fits` says it fits)
                work, tok, attn = [], 0, 0  # tok, attn: `StepCosts.mixed`'s prefill sums (past = 0)
                budget, taken = max_tokens - B, 0
                share_now = share + share_c
                while queue and len(order) < max_seqs and budget > 0:
                    j = queue[0]
                    m = target = n_in[j] + generated[j]
                    if target > budget:
                        if not chunked:
                            break
                        m = budget
                    held = n_in[j] + n_out[j] if reserve else m
                    need = -(-held // bs) * full if flat else units(held)
                    if need > free - taken:
                        break
                    queue.popleft()
                    order[j] = None
                    budget -= m
                    taken += need
                    work.append((j, m, 0))
                    tok += m
                    attn += m * (m + 1) // 2
                    if chunks[j] == 0:
                        admit_s[j] = now
                    share_of[j] -= share_now
            if work:
                # --- a step that prefills: `Engine.form_step`, `StepCosts.mixed`, `Server._end_mixed`
                used += step_need + taken
                w = len(work)  # `StepCosts.mixed`, inlined
                de = e0 + e1 * B + e2 * S + e3 * w + e4 * tok + e5 * attn
                dt = t0 + t1 * B + t2 * S + t3 * w + t4 * tok + t5 * attn
                if limit is not None and de > limit * dt:
                    dt = de / limit
                running = B + w
                N += 1  # `Engine.finish_step`, inlined for steps without a prompt mid-prefill
                S += B
                x = 1.0 / running
                steps = 1
                step_avg += decay_1 * (dt - step_avg)  # `Ledger.advance`
                peak = de / dt if dt > 0.0 else 0.0  # `server._power`
                first = no_jobs
            elif B:
                # --- a plain decode span: `Server._span_steps` and `_end_decode` ------------------
                f = heap[0][0]  # `Engine.span_limit`, inlined for a fresh heap top and no windows
                if sat or (stale and dec.get(heap[0][1], _STALE)[0] != f):
                    e.N, e.used = N, used
                    k = e.span_limit()
                else:
                    k = f - N
                    total = phases.total
                    if total and (cap - used) // total * bs < k:
                        k = phases.steps_within(N, k, cap - used)
                a_t = t0 + t1 * B + t2 * S
                a_e = e0 + e1 * B + e2 * S
                c2b = t2 * B
                dt = k * a_t + c2b * k * (k - 1) * 0.5  # `StepCosts.decode`, inlined (not at the limit)
                unthrottled = a_e < safe_w * a_t if cool else limit is None
                if (
                    k > 1
                    and fi < n
                    and not queue
                    and not static
                    and len(order) < max_seqs
                    # the next arrival comes after the k steps end: it cannot cut them (the series
                    # is monotone in k, so `steps_to_reach` would return more than k)
                    and not (positive and unthrottled and dt < nxt - now)
                ):
                    dt_s = nxt - now  # `StepCosts.steps_to_reach` and `costs.steps_to_reach`, inlined
                    if dt_s <= 0.0:
                        reach = 1
                    elif c2b > 0.0:
                        b = a_t - 0.5 * c2b
                        reach = ceil((-b + sqrt(b * b + 2.0 * c2b * dt_s)) / c2b)
                        if reach < 1:
                            reach = 1
                        while reach > 1 and (reach - 1) * a_t + c2b * (reach - 1) * (reach - 2) * 0.5 >= dt_s:
                            reach -= 1
                        while reach * a_t + c2b * reach * (reach - 1) * 0.5 < dt_s:
                            reach += 1
                    else:
                        reach = steps_to_reach(ct, B, S, dt_s)
                    if not unthrottled and reach > 1:
                        for ctx in (S, S + (reach - 1) * B):  # `StepCosts._throttled`, inlined
                            p = e0 + e1 * B + e2 * ctx
                            if p - limit_w * (t0 + t1 * B + t2 * ctx) > -1e-9 * abs(p):
                                reach = costs.steps_to_reach(B, S, dt_s)
                                break
                    if reach < k:
                        k = reach
                        dt = k * a_t + c2b * k * (k - 1) * 0.5
                if k == 1 and positive:  # the same with last = S: de = a_e + 0.0, l_t = a_t, l_e = a_e
                    de = a_e
                    if not unthrottled and a_e - limit_w * a_t > 0.0:
                        dt, de, peak = costs.decode(B, S, k)
                    else:
                        peak = a_e / a_t
                    step_avg += decay_1 * (dt - step_avg)  # `Ledger.advance`
                else:
                    de = k * a_e + e2 * B * k * (k - 1) * 0.5
                    last = S + (k - 1) * B
                    l_t = t0 + t1 * B + t2 * last
                    l_e = e0 + e1 * B + e2 * last
                    if not unthrottled and (a_e - limit_w * a_t > 0.0 or l_e - limit_w * l_t > 0.0):
                        dt, de, peak = costs.decode(B, S, k)
                    else:
                        p_first = a_e / a_t if a_t > 0.0 else 0.0
                        p_last = l_e / l_t if l_t > 0.0 else 0.0
                        peak = p_first if p_first > p_last else p_last
                    step_avg += (1.0 - RECENT**k) * (dt / k - step_avg)  # `Ledger.advance`
                if k == 1:  # `Engine.run_span` and `BlockPhases.over`, inlined
                    used += step_need
                else:
                    cycles = k // bs
                    rest = k - cycles * bs
                    used += cycles * phases.total
                    if rest:
                        lo = (1 - N - k) % bs
                        if lo + rest <= bs:
                            used += sum(weights[lo : lo + rest])
                        else:
                            used += sum(weights[lo:]) + sum(weights[: lo + rest - bs])
                N += k
                S += B * k
                x = k / B
                steps = k
                running = B
                tokens = B * k
                work = no_work
                first = no_jobs
            elif fi < n:
                if nxt > now:  # `Ledger.jump`, inlined
                    t, tc = nxt, 0.0
                    now = t + tc
                continue
            else:
                e.B, e.N, e.S, e.used, e.share, e.share_c = B, N, S, used, share, share_c
                e.pending = e.queued_need = e.queued_prompt = e.fsum = 0  # nothing queued, nothing decoding
                ledger.t, ledger.tc, ledger.step_avg, ledger.peak_w = t, tc, step_avg, peak_w
                _flush(ledger, rows)
                server._fi = fi
                return True
        else:  # a chunk to continue, or preemptions: the general methods
            e.B, e.N, e.S, e.used, e.share, e.share_c = B, N, S, used, share, share_c
            prefill = e.form_step(now)
            B = e.B
            dt, de = costs.mixed(B, e.S, prefill)
            running = B + len(prefill)
            first, done = e.finish_step(prefill)
            steps, tokens, work = 1, B + e.prefilled, general
            step_avg += decay_1 * (dt - step_avg)  # `Ledger.advance`
            B, N, S, used, share, share_c, part = e.B, e.N, e.S, e.used, e.share, e.share_c, e.partial
            stale = e.preemptions > 0
            peak = de / dt if dt > 0.0 else 0.0  # `server._power`
        if work is not general:
            # --- the end of a span or step: `Engine.run_span` and `finish_step`, inlined -----
            v = share + x
            share_c += (share - v) + x if share >= x else (x - v) + share
            share = v
            if sat and sat[0][0] <= N:
                e.N = N
                e._saturate()
            done = no_jobs
            if heap and heap[0][0] <= N:  # `Engine._complete`, inlined
                done = out = []
                sh = share + share_c
                ptotal = phases.total
                while True:
                    f, j = heappop(heap)
                    entry = dec.get(j)
                    if entry is not None and entry[0] == f:
                        del dec[j]
                        weight = entry[2]
                        weights[entry[1]] -= weight
                        ptotal -= weight
                        length = n_in[j] + n_out[j]
                        B -= 1
                        S -= length - (f - N)
                        generated[j] = n_out[j]
                        del order[j]
                        held = length if reserve else length - 1
                        used -= -(-held // bs) * full if flat else units(held)
                        share_of[j] += sh
                        status[j] = done_code
                        out.append(j)
                    if not heap or heap[0][0] > N:
                        break
                phases.total = ptotal
            if work:  # the prompts this step prefilled
                first = started = []
                prefilled = 0
                for j, m, past in work:
                    chunks[j] += 1
                    gen = generated[j]
                    target = n_in[j] + gen
                    if past + m < target:
                        part = e.partial = (j, past + m, target)
                        continue
                    prefilled += 1
                    if gen == 0:
                        started.append(j)
                    generated[j] = gen = gen + 1
                    if gen == n_out[j]:  # `Engine._finish`, inlined
                        del order[j]
                        held = n_in[j] + n_out[j] if reserve else target
                        used -= -(-held // bs) * full if flat else units(held)
                        share_of[j] += share + share_c
                        status[j] = done_code
                        if done is no_jobs:
                            done = out = []
                        out.append(j)
                    elif reserve or flat:  # `Engine._start_decoding`, inlined without windows
                        f = N + n_out[j] - gen
                        key = (target - N) % bs  # its next context is target + 1
                        weight = 0 if reserve else full
                        dec[j] = (f, key, weight)
                        heappush(heap, (f, j))
                        weights[key] += weight  # `BlockPhases.add`
                        phases.total += weight
                        B += 1
                        S += target + 1
                    else:
                        e.B, e.N, e.S = B, N, S
                        e._start_decoding(j)
                        B, S = e.B, e.S
                e.prefilled = prefilled
                tokens = running - len(work) + prefilled
        rows += (now, dt, de, peak, used / cap, steps, running, tokens)  # `Ledger.advance`, inlined
        v = t + dt
        tc += (t - v) + dt if t >= dt else (dt - v) + t
        t = v
        if peak > peak_w:
            peak_w = peak
        room -= 1
        if not room:
            ledger.t, ledger.tc, ledger.step_avg, ledger.peak_w = t, tc, step_avg, peak_w
            room = _flush(ledger, rows)
        now = t + tc
        if first or done:  # `Server._emit`, inlined
            for j in first:
                first_s[j] = now
            for j in done:
                finish_s[j] = now


def _items(a: np.ndarray) -> Any:
    """A memoryview of the array's buffer: item reads and writes of Python scalars, about twice
    as fast as numpy's (the same values: float64 and integer arithmetic are the same)."""
    return a.data


FLUSH_ROWS = 1024  # span rows buffered before they move to the ledger's log
_ROW = "5d3q"  # a span row: start (s), time (s), energy (J), peak (W), KV share; steps, running, tokens
_ROW_DTYPE = np.dtype([("f", "=f8", 5), ("i", "=i8", 3)])


def _flush(ledger: Ledger, rows: list[float]) -> int:
    """Move buffered span rows into the ledger's log (`pack`) and hand the log over if
    `Ledger.hand_over` says it is due; returns the next `room`."""
    pack(ledger, rows)
    if len(ledger._i) >= ledger._full:
        ledger._on_full()
    return room_for(ledger)


def pack(ledger: Ledger, rows: list[float]) -> None:
    """Move buffered span rows into the ledger's log. A row is `Ledger.advance`'s 5 floats then
    its 3 integers; packed at once, rows cost a fraction of `array.extend`'s per-value conversions."""
    if rows:
        ledger.steps += int(sum(rows[5::8]))  # `Ledger.advance`'s count of steps (ints)
        table = np.frombuffer(_packer(len(rows) // 8)(*rows), dtype=_ROW_DTYPE)
        ledger._f.frombytes(table["f"].tobytes())
        ledger._i.frombytes(table["i"].tobytes())
        rows.clear()


@functools.lru_cache(maxsize=64)
def _packer(rows: int) -> Callable[..., bytes]:
    """The packing function of `rows` span rows (the full buffer's is the one used over and over)."""
    return struct.Struct("=" + _ROW * rows).pack


def room_for(ledger: Ledger, most: int = FLUSH_ROWS) -> int:
    """Rows to buffer before the next `_flush`: `most`, or fewer, so that a hand-over comes after
    the same span as with `Ledger.advance` (at least 1)."""
    return max(min(most, (ledger._full - len(ledger._i) + 2) // 3), 1)

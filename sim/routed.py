"""A fleet whose router decides per arrival, run in one plain event loop instead of SimPy.

Under SimPy (`sim.run._Dispatcher` and `sim.server.Server`) each arrival is a timeout whose
callback routes it and wakes the replica it picked, and each event of a replica is a timeout
whose callback is a chain of small calls: `Server._ring`, `_end_decode` or `_end_mixed`,
`StepCosts.decode`, `Engine.run_span` or `finish_step`, `Ledger.advance`, `Server._next`,
`Engine.can_span`, `span_limit` or `form_step`, `StepCosts.span_s`, `Server._sleep`. At 64
replicas those calls and the event objects, not the arithmetic, are most of a run.

`RoutedLoop` runs the same events in the same order:
- its queue holds (time, sequence number, replica) entries, the time computed with SimPy's own
  arithmetic (`now + max(until − now, 0)`) and the sequence numbers handed out in the order SimPy
  hands out event ids, so that events of the same instant come in SimPy's order (which decides
  which arrivals join which step); a replica's superseded wait stays in the queue and is skipped
  when it comes up, as SimPy's stale timeouts are;
- each replica's events run in a generator (`_replica`) that keeps the engine's counters, the
  clock and the wait under way in local variables and writes back what a router reads before
  each wait; the common cases of those calls are copied inline (each copy names the function it
  copies; the float operations are the same, in the same order), the rare ones (preemption, a
  prompt mid-prefill, sliding-window layers, a step at the power limit) call the general methods;
- a wait that ends before the next arrival runs at once: nothing reads a replica between
  arrivals, and its next wait is numbered before anything the next arrival schedules, as under
  SimPy, so same-instant order is kept;
- arrivals are routed by `Router.pick` and offered as `Server.offer` does, and the replicas to
  wake are woken after the next arrival is scheduled, as `sim.run._Dispatcher` does; a replica's
  outstanding tokens go straight into its router's `LoadIndex` (`LoadIndex.tracked`) at each
  event and offer, or, for an index that also keeps the finish order, through `on_change`.
Records, span logs and the router's picks are bit for bit those of the SimPy run
(tests/sim/test_routed.py; tests/sim/test_sim_server_wakes.py holds both to the interrupting
process they replaced). Unlike `sim.replay` (a server fed alone), every engine sum a router
reads (`Engine.pending`, `queued_need`, `queued_prompt`, `fsum`, `fmax`) is kept at every event,
except the recent step time, kept only for a router that reads it (`Router.reads_step_time`).
"""

from __future__ import annotations

import functools
import itertools
import math
import struct
from collections.abc import Callable, Generator, Sequence
from heapq import heappop, heappush, heapreplace
from typing import Any

import numpy as np

from sim.engine import Prefill
from sim.jobs import DONE, JobTable
from sim.ledger import RECENT, Ledger
from sim.routing import Router
from sim.server import _DECODE, _IDLE, _MIXED, Server

_NO_JOBS: tuple[int, ...] = ()
_STALE = (-1, 0, 0)  # `Engine.decoders`' entry of a job that does not decode
_NO_WORK: Prefill = []  # a decode span's prefill work (never appended to)
_ARRIVAL = -1  # the queue entry of the dispatcher's next arrival
PROGRESS_EVERY = 4096  # arrival instants between two updates of the progress bar
BUFFER_ROWS = 128  # span rows a replica buffers (a fleet of hundreds holds them all at once)


def fits(servers: Sequence[Server]) -> bool:
    """Whether `RoutedLoop` can run these replicas: `Server` itself (a subclass may change its
    events), the fast mode, nothing fed to them and nothing listening to them but a router."""
    return all(
        type(s) is Server
        and s.engine.scheduler.plain_admission()
        and not (s._exact or s._record or s.alone or len(s._ftimes))
        and s.on_finish is None
        and s.on_reject is None
        for s in servers
    )


class _Slot:
    """One replica in the loop: its wait under way and the constants its events read."""

    __slots__ = ("at", "c", "offer", "room", "rows", "send", "server", "timer")

    def __init__(self, server: Server, tell: tuple[Any, ...], shared: tuple[Any, ...]) -> None:
        self.server = server
        self.c = _constants(server, tell) + shared  # what `RoutedLoop._replica` reads
        self.timer = -1  # sequence number of the wait under way (-1: none)
        e = server.engine
        self.offer = (e, e._fit, e.reserve, e.chunked, e.max_tokens, e.static, e.max_seqs, *tell)
        self.rows: list[float] = []  # span rows not yet in the ledger's log, 8 values each (`sim.replay.pack`)
        self.room = room_for(server.ledger, BUFFER_ROWS)  # rows to buffer before they move to the ledger
        self.send: Any = None  # its `_replica`'s send
        self.at = 0.0  # the time (s) of the submit that wakes it


class RoutedLoop:
    """Arrivals at `times_s` (sorted; job i arrives at times_s[i]) routed by `router` to
    `servers` (in index order), run to the end by `run`. `now` is the time (s) of the queue entry
    under way, as `simpy.Environment.now` would read (a replica's events run ahead of it up to the
    next arrival; no replica starts a span before it unless it is busy)."""

    def __init__(self, servers: Sequence[Server], router: Router, times_s: np.ndarray, jobs: JobTable) -> None:
        assert fits(servers) and [s.index for s in servers] == list(range(len(servers)))
        self.servers, self.router, self.jobs = list(servers), router, jobs
        self.times = np.ascontiguousarray(times_s, dtype=float).data
        self.now = 0.0
        self.horizon = 0.0  # SimPy's time of the next arrival (s; inf: none)
        self._queue: list[tuple[float, int, int]] = []
        self._eid = itertools.count(1).__next__  # 0 is the first arrival's
        shared = (
            jobs.n_in,
            jobs.n_out,
            jobs.generated,
            _items(jobs.share),
            _items(jobs.status),
            _items(jobs.first_s),
            _items(jobs.finish_s),
            _items(jobs.admit_s),
            _items(jobs.chunks),
            self._eid,
            router.reads_step_time,
        )
        # how each replica tells its router of a change: (on_change, tokens, heap, position), with
        # the token list, heap and position in its `LoadIndex` if the loop keeps its tokens there
        # itself (`LoadIndex.tracked`), else its `on_change`
        tell: dict[int, tuple[Any, ...]] = {s.index: (s.on_change, None, None, 0) for s in self.servers}
        for load_index in router.load_indexes:
            track = load_index.tracked()
            if track is not None:
                for pos, s in enumerate(load_index.servers):
                    tell[s.index] = (None, *track, pos)
        self.slots = [_Slot(s, tell[s.index], shared) for s in self.servers]

    def run(self, bar: Any = None) -> None:
        """Every event to the last: arrivals at their times, the replicas' steps and spans."""
        queue, slots, times, n = self._queue, self.slots, self.times, len(self.times)
        n_in, n_out, server_of, pick = self.jobs.n_in, self.jobs.n_out, _items(self.jobs.server), self.router.pick
        for s in self.servers:  # `Server._start`: nothing fed, so each waits idle for a submit
            s._idle = s._waiting = True
        for slot in self.slots:
            slot.send = self._replica(slot).send
            slot.send(None)  # to its first wait
        if n:
            heappush(queue, (0.0, 0, _ARRIVAL))  # `_Dispatcher.__init__`'s timeout(0)
        i = instants = 0
        woken: list[tuple[_Slot, float]] = []
        while queue:
            now, eid, k = queue[0]
            if k >= 0:  # a replica's wait ends (`Server._ring`), unless a wake-up superseded it
                slot = slots[k]
                if slot.timer != eid:
                    heappop(queue)
                    continue
                self.now = now
                wait = slot.send(now)
                if wait is None:
                    heappop(queue)
                else:  # its next wait, in the entry's place (one sift instead of two)
                    heapreplace(queue, wait)
                continue
            heappop(queue)
            self.now = now  # `_Dispatcher._arrive`: route every arrival due, schedule the next, wake
            while i < n and times[i] <= now:
                a, b = n_in[i], n_out[i]
                server = pick(a, b)
                slot = slots[server.index]
                e, fit, reserve, chunked, max_tokens, static, max_seqs, on_change, tokens, lheap, pos = slot.offer
                queue_e = e.queue  # `Server.offer`, `_enqueue` and `Engine.enqueue`, inlined
                room = not queue_e and not static and len(e.order) < max_seqs  # `Engine.accepts_arrivals`
                server_of[i] = server.index
                need = a + b
                if (need if reserve else need - 1) > fit or (not chunked and (a if reserve else need - 1) > max_tokens):
                    e.enqueue(i)  # rejects it, with the reason
                else:
                    queue_e.append(i)
                    e.pending += need
                    e.queued_need += need  # `Engine._count_queued`
                    e.queued_prompt += a
                    if tokens is not None:  # its outstanding tokens, for the router (`LoadIndex.tracked`)
                        tokens[pos] += need
                        heappush(lheap, (tokens[pos], pos))
                    elif on_change is not None:
                        on_change()
                    if not server._interrupted:
                        server._interrupted = server._idle or room
                        if server._interrupted:
                            woken.append((slot, times[i]))
                i += 1
            if i < n:
                self.horizon = now + (times[i] - now)
                heappush(queue, (self.horizon, self._eid(), _ARRIVAL))
            else:
                self.horizon = math.inf
            for slot, at in woken:  # `Server.wake`
                slot.server._interrupted = False
                slot.at = at
                wait = slot.send(None)
                if wait is not None:
                    heappush(queue, wait)
            woken.clear()
            instants += 1
            if bar is not None and not instants % PROGRESS_EVERY:
                bar.update(max(min(round(now), bar.total) - bar.n, 0))
        self._flush_all()

    def _replica(self, slot: _Slot) -> Generator[tuple[float, int, int] | None, float | None, None]:
        """One replica's events: resumed by `send(now)` when its wait ends at SimPy's time `now`
        (s), or by `send(None)` when a submit at `slot.at` (s) wakes it (at the loop's `now`). It
        yields the queue entry of its next wait, or None when it waits idle for a submit.

        An event closes the span or step the wait ended (`Server._ring`: `_end_decode` or
        `_end_mixed`) or, idle, starts at the submit's time (`Server._resume_idle`), then starts
        what comes next (`Server._next`). A wait that ends before the next arrival, the next event
        that reads a replica, runs at once. A wake-up of a busy replica (`Server.wake`) cuts its
        decode span at the first step boundary after the submit, or keeps its step's end, and
        waits anew. The engine's counters live in local variables; what a router reads is written
        back before each wait, and what the engine's own methods read before they run.
        """
        (
            e,
            ledger,
            costs,
            index,
            on_change,
            load,
            lheap,
            pos,
            t0,
            t1,
            t2,
            t3,
            t4,
            t5,
            e0,
            e1,
            e2,
            e3,
            e4,
            e5,
            limit,
            cool,
            safe_w,
            cap,
            bs,
            full,
            flat,
            units,
            phases,
            weights,
            queue,
            order,
            dec,
            heap,
            sat,
            max_seqs,
            max_tokens,
            chunked,
            reserve,
            static,
            n_in,
            n_out,
            generated,
            share_of,
            status,
            first_s,
            finish_s,
            admit_s,
            chunks,
            eid,
            step_time,
        ) = slot.c
        server, loop = slot.server, self
        B, N, S, used, share, share_c = e.B, e.N, e.S, e.used, e.share, e.share_c
        t, tc = ledger.t, ledger.tc
        rows, room = slot.rows, slot.room
        phase = _IDLE
        # the wait under way: a decode span (B, S at its start `t_span`, k steps, its time `dt_span`
        # unthrottled, its first step's time `a_span` and energy `ae_span`, and whether it stays
        # under the power limit) or a mixed step (its prefill work `step`, time s, energy J)
        k = 0
        t_span = dt_span = a_span = ae_span = dt_step = de_step = 0.0
        unthrottled = True
        step: Prefill = _NO_WORK
        yield None  # started (`send(None)`): idle, waiting for a submit
        now_sim, at = loop.now, slot.at
        while True:
            if phase == _IDLE:  # woken: `Server._resume_idle` and `Ledger.jump`
                server._idle = False
                if at > t + tc:
                    t, tc = at, 0.0
            else:
                first: Sequence[int] = _NO_JOBS
                done: Sequence[int] = _NO_JOBS
                if phase == _DECODE:  # `Server._end_decode`, `StepCosts.decode`, `Engine.run_span`
                    dt, a_e = dt_span, ae_span
                    de = k * a_e + e2 * B * k * (k - 1) * 0.5
                    last = S + (k - 1) * B
                    l_t = t0 + t1 * B + t2 * last
                    l_e = e0 + e1 * B + e2 * last
                    if not unthrottled and (a_e - limit * a_span > 0.0 or l_e - limit * l_t > 0.0):
                        dt, de, peak = costs.decode(B, S, k)
                    else:
                        p_first = a_e / a_span if a_span > 0.0 else 0.0
                        p_last = l_e / l_t if l_t > 0.0 else 0.0
                        peak = p_first if p_first > p_last else p_last
                    cycles = k // bs  # `BlockPhases.over`, inlined
                    rest = k - cycles * bs
                    used += cycles * phases.total
                    if rest:
                        lo = (1 - N - k) % bs
                        if lo + rest <= bs:
                            used += sum(weights[lo : lo + rest])
                        else:
                            used += sum(weights[lo:]) + sum(weights[: lo + rest - bs])
                    x = k / B
                    steps = k
                    running = B
                    tokens = B * k
                    work = _NO_WORK
                else:  # `Server._end_mixed` and `Engine.finish_step`
                    work, dt, de = step, dt_step, de_step
                    running = B + len(work)
                    x = 1.0 / running
                    steps = 1
                    tokens = B
                    peak = de / dt if dt > 0.0 else 0.0  # `server._power`
                v = share + x  # `compensated_add`, as `run_span` and `finish_step` inline it
                share_c += (share - v) + x if share >= x else (x - v) + share
                share = v
                N += steps
                S += B * steps
                if sat and sat[0][0] <= N:
                    e.N = N
                    e._saturate()
                if heap and heap[0][0] <= N:  # `Engine._complete`, inlined
                    done = out = []
                    sh = share + share_c
                    ptotal, fs = phases.total, 0
                    while heap and heap[0][0] <= N:
                        f, j = heappop(heap)
                        entry = dec.get(j)
                        if entry is None or entry[0] != f:
                            continue
                        del dec[j]
                        weight = entry[2]
                        weights[entry[1]] -= weight
                        ptotal -= weight
                        length = n_in[j] + n_out[j]
                        B -= 1
                        S -= length - (f - N)
                        fs += f
                        generated[j] = n_out[j]
                        del order[j]
                        held = length if reserve else length - 1
                        used -= -(-held // bs) * full if flat else units(held)
                        share_of[j] += sh
                        status[j] = DONE
                        out.append(j)
                    phases.total = ptotal
                    e.fsum -= fs
                if work:  # the rest of `Engine.finish_step`: the prompts this step prefilled
                    part = e.partial
                    if part is not None and any(w[0] == part[0] for w in work):
                        part = None
                    first = started = []
                    prefilled = 0
                    for j, m, past in work:
                        chunks[j] += 1
                        gen = generated[j]
                        target = n_in[j] + gen
                        if past + m < target:
                            part = (j, past + m, target)
                            continue
                        prefilled += 1
                        if gen == 0:
                            started.append(j)
                        generated[j] = gen = gen + 1
                        e.pending -= n_in[j] + n_out[j]
                        if gen == n_out[j]:  # `Engine._finish`, inlined
                            del order[j]
                            held = n_in[j] + n_out[j] if reserve else target
                            used -= -(-held // bs) * full if flat else units(held)
                            share_of[j] += share + share_c
                            status[j] = DONE
                            if done is _NO_JOBS:
                                done = []
                            done.append(j)  # type: ignore[attr-defined]
                        elif reserve or flat:  # `Engine._start_decoding`, inlined without windows
                            f = N + n_out[j] - gen
                            key = (target - N) % bs  # its next context is target + 1
                            weight = 0 if reserve else full
                            dec[j] = (f, key, weight)
                            heappush(heap, (f, j))
                            weights[key] += weight  # `BlockPhases.add`
                            phases.total += weight
                            e.fsum += f
                            if B == 0 or f > e.fmax:
                                e.fmax = f
                            B += 1
                            S += target + 1
                        else:
                            e.B, e.N, e.S = B, N, S
                            e._start_decoding(j)
                            B, S = e.B, e.S
                    e.partial = part
                    e.prefilled = prefilled
                    tokens += prefilled
                rows += (t + tc, dt, de, peak, used / cap, steps, running, tokens)  # `Ledger.advance`
                v = t + dt
                tc += (t - v) + dt if t >= dt else (dt - v) + t
                t = v
                if step_time:
                    ledger.step_avg += (1.0 - RECENT**steps) * (dt / steps - ledger.step_avg)
                if peak > ledger.peak_w:
                    ledger.peak_w = peak
                e.B, e.N, e.S, e.used = B, N, S, used
                room -= 1
                if not room:
                    ledger.t, ledger.tc = t, tc
                    loop._spill(slot)
                    room = slot.room
                if first or done:  # `Server._emit`, inlined
                    stamp = t + tc
                    for j in first:
                        first_s[j] = stamp
                    for j in done:
                        finish_s[j] = stamp
            # --- what comes next: `Server._next` ----------------------------------------------
            now = t + tc
            step_need = weights[-N % bs]  # KV units the decoders allocate in the next step
            free = cap - used - step_need
            general = False
            if e.partial is None and free >= 0 and (B or queue):  # no chunk to continue, no preemption
                work = _NO_WORK
                if queue and not (static and order):  # `Engine._admit`, inlined: it admits the head
                    # iff `Engine.can_span`'s `_head_fits` says it fits, so a span runs when it takes nothing
                    work, tok, attn = [], 0, 0  # `StepCosts.mixed`'s prefill sums (past = 0)
                    budget, taken, need_sum, prompt_sum = max_tokens - B, 0, 0, 0
                    share_now = share + share_c
                    while queue and len(order) < max_seqs and budget > 0:
                        j = queue[0]
                        a = n_in[j]
                        m = target = a + generated[j]
                        if target > budget:
                            if not chunked:
                                break
                            m = budget
                        held = a + n_out[j] if reserve else m
                        need = -(-held // bs) * full if flat else units(held)
                        if need > free - taken:
                            break
                        queue.popleft()
                        order[j] = None
                        need_sum += a + n_out[j]  # `Engine._count_queued`
                        prompt_sum += a
                        budget -= m
                        taken += need
                        work.append((j, m, 0))
                        tok += m
                        attn += m * (m + 1) // 2
                        if chunks[j] == 0:
                            admit_s[j] = now
                        share_of[j] -= share_now
                    if work:
                        e.queued_need -= need_sum
                        e.queued_prompt -= prompt_sum
                if work:  # `Engine.form_step`, `Server._start_mixed`, `StepCosts.mixed`
                    used += step_need + taken
                    e.used = used
                    w = len(work)
                    de_step = e0 + e1 * B + e2 * S + e3 * w + e4 * tok + e5 * attn
                    dt_step = t0 + t1 * B + t2 * S + t3 * w + t4 * tok + t5 * attn
                    if limit is not None and de_step > limit * dt_step:
                        dt_step = de_step / limit
                    phase, step = _MIXED, work
                    until = now + dt_step
                elif B:  # a plain decode span: `Engine.span_limit` and `StepCosts.span_s`, inlined
                    f = heap[0][0]
                    if sat or (e.preemptions and dec.get(heap[0][1], _STALE)[0] != f):
                        k = e.span_limit()
                    else:
                        k = f - N
                        total = phases.total
                        if total and (cap - used) // total * bs < k:
                            k = phases.steps_within(N, k, cap - used)
                    a_span = t0 + t1 * B + t2 * S
                    ae_span = e0 + e1 * B + e2 * S
                    dt_span = k * a_span + t2 * B * k * (k - 1) * 0.5
                    # a span that starts cool stays under the power limit: `StepCosts.span_s` is the series
                    unthrottled = limit is None or (cool and ae_span < safe_w * a_span)
                    until = now + (dt_span if unthrottled else costs.span_s(B, S, k))
                    phase, t_span = _DECODE, now
                else:
                    general = True
            elif B or e.partial is not None or queue:  # a chunk to continue, or preemptions
                general = True
            else:  # `Server._start_idle`: wait for a submit
                server._idle = True
                phase = _IDLE
                ledger.t, ledger.tc = t, tc
                e.share, e.share_c = share, share_c
                if load is not None:  # tell the router: `LoadIndex.tracked`, or `on_change`
                    w = e.pending + e.fsum  # (no decoders)
                    if w != load[pos]:
                        load[pos] = w
                        heappush(lheap, (w, pos))
                elif on_change is not None:
                    on_change()
                yield None
                now_sim, at = loop.now, slot.at
                continue
            if general:  # `Engine.form_step` and `Server._start_mixed` by the general methods
                e.share, e.share_c = share, share_c
                step = e.form_step(now)
                B, S, used = e.B, e.S, e.used  # (it may preempt)
                assert B or step, "a step with nothing to run"
                dt_step, de_step = costs.mixed(B, S, step)
                phase = _MIXED
                until = now + dt_step
            ledger.t, ledger.tc = t, tc
            if load is not None:  # once per event, tell the router: `LoadIndex.tracked`, or `on_change`
                w = e.pending + e.fsum - B * N  # `Engine.outstanding_tokens`
                if w != load[pos]:
                    load[pos] = w
                    heappush(lheap, (w, pos))
            elif on_change is not None:
                on_change()
            while True:  # `Server._sleep`: SimPy's time of the wait's end
                d = until - now_sim
                now_sim += d if d > 0.0 else 0.0
                if now_sim < loop.horizon:
                    break  # it ends before the next arrival, the next event that reads a replica: now
                slot.timer = tid = eid()
                ring = yield now_sim, tid, index  # the wait, for `run` to queue
                if ring is not None:
                    now_sim = ring
                    break
                now_sim, at = loop.now, slot.at
                if phase == _MIXED:  # woken: `Server.wake`; a step is atomic, it ends when it ends
                    until = t + tc + dt_step
                    continue
                dt_s = at - t_span  # a decode span is cut: `costs.steps_to_reach`, inlined
                c2b = t2 * B
                if not unthrottled or c2b <= 0.0:
                    reach = costs.steps_to_reach(B, S, dt_s)
                elif dt_s <= 0.0:
                    reach = 1
                else:
                    b = a_span - 0.5 * c2b
                    reach = math.ceil((-b + math.sqrt(b * b + 2.0 * c2b * dt_s)) / c2b)
                    if reach < 1:
                        reach = 1
                    while reach > 1 and (reach - 1) * a_span + c2b * (reach - 1) * (reach - 2) * 0.5 >= dt_s:
                        reach -= 1
                    while reach * a_span + c2b * reach * (reach - 1) * 0.5 < dt_s:
                        reach += 1
                if reach < k:
                    k = reach
                    dt_span = k * a_span + t2 * B * k * (k - 1) * 0.5
                until = t_span + (dt_span if unthrottled else costs.span_s(B, S, k))

    def _spill(self, slot: _Slot) -> None:
        """Move a replica's buffered span rows into its ledger; if that makes its hand-over due
        (`Ledger.hand_over`: at the same span as `Ledger.advance` would), every replica's rows
        first, so that each ledger holds what it would under SimPy when the hand-over reads them."""
        ledger = slot.server.ledger
        pack(ledger, slot.rows)
        if len(ledger._i) >= ledger._full:
            self._flush_all()
            ledger._on_full()
        slot.room = room_for(ledger, BUFFER_ROWS)

    def _flush_all(self) -> None:
        """Every replica's buffered span rows into its ledger (before a hand-over, and at the end)."""
        for slot in self.slots:
            pack(slot.server.ledger, slot.rows)


def _constants(server: Server, tell: tuple[Any, ...]) -> tuple[Any, ...]:
    """What `RoutedLoop._replica` reads of one replica, in its order (before the shared part);
    `tell`: how it tells its router of a change (`RoutedLoop.__init__`)."""
    e, costs, kv = server.engine, server.costs, server.kv
    t0, t1, t2, _, _, _ = costs.time_s
    e0, e1, e2, _, _, _ = costs.energy_j
    limit = costs.power_limit_w
    # Step power along a decode span moves monotonically from its first step's towards e2 / t2
    # (`StepCosts.decode`): a span whose first step and that limit are both well under the power limit
    # never throttles, and `StepCosts.span_s` is the plain series.
    safe_w = (0.0 if limit is None else limit) * (1.0 - 1e-6)
    cool = min(t0, e0) > 0.0 and min(t1, t2, e1, e2) >= 0.0 and e2 < safe_w * t2
    return (
        e,
        server.ledger,
        costs,
        server.index,
        *tell,
        *costs.time_s,
        *costs.energy_j,
        limit,
        cool,
        safe_w,
        e.cap,
        e._bs,
        kv.full_units,
        kv.window_units == 0,
        e.units,
        e.phases,
        e.phases.weights,
        e.queue,
        e.order,
        e.decoders,
        e._heap,
        e._sat,
        e.max_seqs,
        e.max_tokens,
        e.chunked,
        e.reserve,
        e.static,
    )


__all__ = ["RoutedLoop", "fits"]


def _items(a: np.ndarray) -> Any:
    """A memoryview of the array's buffer: item reads and writes of Python scalars, about twice
    as fast as numpy's (the same values: float64 and integer arithmetic are the same)."""
    return a.data


_ROW = "5d3q"  # a span row: start (s), time (s), energy (J), peak (W), KV share; steps, running, tokens
_ROW_DTYPE = np.dtype([("f", "=f8", 5), ("i", "=i8", 3)])


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


def room_for(ledger: Ledger, most: int) -> int:
    """Rows to buffer before the next `_flush`: `most`, or fewer, so that a hand-over comes after
    the same span as with `Ledger.advance` (at least 1)."""
    return max(min(most, (ledger._full - len(ledger._i) + 2) // 3), 1)

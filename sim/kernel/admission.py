"""Forming a replica's next step, compiled: the queue, admission, and the preemptions that make
room, on a `sim.kernel.state.Replica`. The rules and their conventions are those of the simple
reference `sim.engine.simple.SimpleEngine` (its docstring says them in plain words); the results
agree to 1e-9 relative. The steps themselves run in `sim.kernel.decoding`.

A step's prefill work is `r.work_j`, `r.work_m`, `r.work_past` (job, chunk tokens, tokens of the
prefill already computed; `r.nwork` of them). Preemptions are logged in `r.plog` as (job, kind,
tokens) rows for the job table's per-job counters. A prefix cache (`sim.kernel.prefix`, on when
`r.pc`) lets an admission skip the prefill of its prompt's cached leading blocks: its work starts
at that many tokens already computed.
"""

from __future__ import annotations

from numba import njit

from sim.engine.jobs import REJECT_KV, REJECT_TOKEN_BUDGET, REJECTED
from sim.kernel import hooks, prefix
from sim.kernel.decoding import stop_decoding
from sim.kernel.kv import step_need, units
from sim.kernel.lists import finish_of, queue_pop, queue_push, queue_push_front, run_add, run_remove
from sim.kernel.state import DECODER, PARTIAL, REQUEUE


@njit(cache=True, inline="always")
def _count_queued(r, j, sign):  # type: ignore[no-untyped-def]
    r.queued_need += sign * (r.n_in[j] + r.n_out[j])
    r.queued_prompt += sign * r.n_in[j]


@njit(cache=True)
def enqueue(r, j):  # type: ignore[no-untyped-def]
    """Queue job j, or reject it (status and reason set) if this replica can never serve it."""
    n_in, n_out = r.n_in[j], r.n_out[j]
    need = n_in + n_out
    if (need if r.reserve else need - 1) > r.fit:
        r.status[j], r.reason[j] = REJECTED, REJECT_KV
        return False
    if not r.chunked and (n_in if r.reserve else need - 1) > r.max_tokens:
        r.status[j], r.reason[j] = REJECTED, REJECT_TOKEN_BUDGET
        return False
    if hooks.never_admitted(r, n_in, n_out):
        r.status[j], r.reason[j] = REJECTED, REJECT_KV
        return False
    queue_push(r, j)
    r.pending += need
    _count_queued(r, j, 1)
    return True


@njit(cache=True)
def accepts_arrivals(r):  # type: ignore[no-untyped-def]
    """Whether an arrival now could join the next step (the queue is empty and a slot is free)."""
    return r.qlen == 0 and not r.static and r.olen < r.max_seqs


@njit(cache=True)
def _head_fits(r, free):  # type: ignore[no-untyped-def]
    """Whether the head of the queue fits next to the decoders, with `free` KV units left."""
    if r.qlen == 0 or r.olen >= r.max_seqs or (r.static and r.olen):
        return False
    budget = r.max_tokens - r.B
    if budget <= 0:
        return False
    j = r.qhead
    target = r.n_in[j] + r.generated[j]
    hits, idle = prefix.lookup(r, j, target)
    past = hits * r.hb
    if target - past > budget:
        if not r.chunked:
            return False
        target = past + budget
    need = units(r, r.n_in[j] + r.n_out[j]) if r.reserve else prefix.need(r, hits, idle, target)
    return need + hooks.reserve(r, j, target) <= free - hooks.headroom(r)


@njit(cache=True)
def busy(r):  # type: ignore[no-untyped-def]
    """Whether a step has work: decoders, a prompt mid-prefill or a queue."""
    return r.B > 0 or r.part_j >= 0 or r.qlen > 0


@njit(cache=True)
def can_span(r):  # type: ignore[no-untyped-def]
    """Whether the next step is a plain decode of the running decoders (nothing else changes)."""
    if not r.B or r.part_j >= 0:
        return False
    free = r.cap - r.used - step_need(r)
    return free >= 0 and not (r.qlen and _head_fits(r, free))


@njit(cache=True)
def form_step(r, now_s):  # type: ignore[no-untyped-def]
    """Schedule the next step (running first, then the queue) into `r.work`."""
    budget = r.max_tokens - r.B
    free = r.cap - r.used
    demand = step_need(r)
    part, m, part_need = r.part_j, 0, 0
    if part >= 0:
        m = min(r.part_target - r.part_done, budget)
        part_need = 0 if r.reserve else units(r, r.part_done + m) - units(r, r.part_done)
        demand += part_need
    preempted = False
    while demand > free:
        v = hooks.victim(r)
        run_remove(r, v)
        preempted = True
        if part >= 0 and v == part:
            demand -= part_need
            free += _preempt_partial(r)
            part, m = -1, 0
        else:
            need, held = _preempt_decoder(r, v)
            demand -= need
            free += held
            budget += 1
        _requeue(r, v)
    if preempted:
        hooks.preempted(r)
    r.nwork = 0
    if part >= 0 and m > 0:
        _add_work(r, part, m, r.part_done)
        budget -= m
    # no admission beside a prompt that stays mid-prefill (one partial prompt at a time)
    settled = part < 0 or r.part_done + m >= r.part_target
    if r.pc:
        prefix.evict(r, free - demand)  # the running sequences allocate first
    if r.qlen and settled and (not preempted or r.admit_after):
        demand += _admit(r, budget, free - demand, now_s)
    r.used += demand


@njit(cache=True, inline="always")
def _add_work(r, j, m, past):  # type: ignore[no-untyped-def]
    i = r.nwork
    r.work_j[i], r.work_m[i], r.work_past[i] = j, m, past
    r.nwork = i + 1


@njit(cache=True)
def _admit(r, budget, free, now_s):  # type: ignore[no-untyped-def]
    """FCFS admissions into `r.work`; returns the KV units they take."""
    if r.static and r.olen:
        return 0  # static batching: a batch forms only on an empty server
    room = free - hooks.headroom(r)  # KV units admissions may take or set aside
    share = r.share + r.share_c
    taken = 0
    while r.qlen and r.olen < r.max_seqs and budget > 0:
        j = r.qhead
        target = r.n_in[j] + r.generated[j]
        hits, idle = prefix.lookup(r, j, target)
        past = hits * r.hb
        m = target - past if target - past <= budget else budget
        if past + m < target and not r.chunked:
            break  # `enqueue` rejected any request whose (re)prefill could exceed the whole budget
        need = units(r, r.n_in[j] + r.n_out[j]) if r.reserve else prefix.need(r, hits, idle, past + m)
        aside = hooks.reserve(r, j, past + m)
        if need + aside > room - taken:
            break
        room -= aside
        queue_pop(r)
        run_add(r, j)
        _count_queued(r, j, -1)
        budget -= m
        taken += need
        _add_work(r, j, m, past)
        if hits:
            prefix.take(r, j, hits)
        if r.pc:
            prefix.evict(r, free - taken)
        if r.chunks[j] == 0:
            r.admit_s[j] = now_s
        r.share_of[j] -= share
    return taken


@njit(cache=True)
def _log(r, j, kind, tokens):  # type: ignore[no-untyped-def]
    i = r.nlog
    r.plog[i, 0], r.plog[i, 1], r.plog[i, 2] = j, kind, tokens
    r.nlog = i + 1


@njit(cache=True)
def _preempt_decoder(r, j):  # type: ignore[no-untyped-def]
    """Preempt decoder j: (units it would have allocated this step, units it held)."""
    d, n = r.slot[j], r.N
    f = r.dec_f[d]
    need = r.dec_w[d] if r.dec_key[d] == -n % r.bs else 0
    ctx = stop_decoding(r, j)
    if r.B:
        fmax = 0
        i = r.ohead
        while i >= 0:
            fmax = max(fmax, finish_of(r, i))
            i = r.nxt[i]
        r.fmax = fmax
    gen = r.n_out[j] - (f - n)
    r.generated[j] = gen
    _log(r, j, DECODER, r.n_in[j] + gen)  # it re-prefills its prompt and the tokens it generated
    held = prefix.drop(r, j, ctx - 1)
    r.used -= held
    return need, held


@njit(cache=True)
def _preempt_partial(r):  # type: ignore[no-untyped-def]
    """Preempt the prompt mid-prefill: its computed chunk is lost; returns the units it held."""
    j, done = r.part_j, r.part_done
    r.part_j = -1
    _log(r, j, PARTIAL, done)
    held = 0 if r.reserve else prefix.drop(r, j, done)
    r.used -= held
    r.pending -= r.n_in[j] + r.n_out[j]
    return held


@njit(cache=True)
def _requeue(r, j):  # type: ignore[no-untyped-def]
    """A preempted job goes back to the queue (front or back, as the scheduler says)."""
    _log(r, j, REQUEUE, 0)
    r.preemptions += 1
    r.share_of[j] += r.share + r.share_c
    if r.requeue_front:
        queue_push_front(r, j)
    else:
        queue_push(r, j)
    r.pending += r.n_in[j] + r.n_out[j]
    _count_queued(r, j, 1)

"""A replica's engine rules, compiled: admission, KV accounting, preemption, decode spans and
completions, on a `sim.kernel.state.Replica`. The rules and their conventions are those of
`sim.engine.reference.Engine` (its docstring says them); the results are the same bits. A request's share of
the steps' constant energy is a running sum of 1/(sequences in the step), each step's term scaled
by 1 + its `extra` (the energy a power cap's lower clock saved, in step constants), so that the
requests' charges add up to the steps' energy.

A step's prefill work is `r.work_j`, `r.work_m`, `r.work_past` (job, chunk tokens, tokens of the
prefill already computed; `r.nwork` of them); the jobs a step or span completed are `r.done`
(`r.ndone`) and the prompts that emitted their first token `r.first` (`r.nfirst`). Preemptions
are logged in `r.plog` as (job, kind, tokens) rows for the job table's per-job counters. A
prefix cache (`sim.kernel.prefix`, on when `r.pc`) lets an admission skip the prefill of its
prompt's cached leading blocks: its work starts at that many tokens already computed.
"""

from __future__ import annotations

from numba import njit

from sim.engine.jobs import DONE, REJECT_KV, REJECT_TOKEN_BUDGET, REJECTED
from sim.kernel import hooks, prefix
from sim.kernel.kv import over, phase_add, step_need, steps_within, units
from sim.kernel.lists import (
    decoder_free,
    decoder_slot,
    finish_of,
    finish_push,
    heap_pop,
    queue_pop,
    queue_push,
    queue_push_front,
    run_add,
    run_remove,
    saturation_push,
)
from sim.kernel.state import DECODER, PARTIAL, REQUEUE


@njit(cache=True, inline="always")
def _add_share(r, x):  # type: ignore[no-untyped-def]
    """r.share += x with Neumaier compensation (`sim.engine.ledger.compensated_add`)."""
    total = r.share
    v = total + x
    r.share_c += (total - v) + x if total >= x else (x - v) + total
    r.share = v


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
def span_limit(r):  # type: ignore[no-untyped-def]
    """Steps of plain decode from now: to the next completion, window saturation or KV shortage."""
    while finish_of(r, r.hj[0]) != r.hf[0]:  # stale entries
        heap_pop(r.hf, r.hj, r.hj, r.hn)
        r.hn -= 1
    k = r.hf[0] - r.N
    while r.sn and finish_of(r, r.sj[0]) != r.sf[0]:
        heap_pop(r.ss, r.sf, r.sj, r.sn)
        r.sn -= 1
    if r.sn and r.ss[0] - r.N < k:
        k = r.ss[0] - r.N
    k = min(k, hooks.steady_steps(r))
    free = r.cap - r.used
    if r.ptotal and prefix.head_idle(r):  # no eviction within a span that could change the head's admission
        k = max(1, steps_within(r, k, free - r.cidle * r.bu))
    if not r.ptotal or free // r.ptotal * r.bs >= k:
        return k  # the cache holds whole cycles of allocations past k
    return steps_within(r, k, free)


@njit(cache=True)
def run_span(r, steps, extra):  # type: ignore[no-untyped-def]
    """Advance the decoders `steps` plain decode steps whose energy differs from the coefficients'
    by `extra` step constants (`sim.kernel.costs`); the jobs that finished are `r.done`."""
    r.used += over(r, steps)
    if r.pc:
        prefix.evict(r, r.cap - r.used)
    _add_share(r, (steps + extra) / r.B)
    r.N += steps
    r.S += r.B * steps
    r.ndone = 0
    if r.sn and r.ss[0] <= r.N:
        _saturate(r)
    if r.hf[0] <= r.N:
        _complete(r)


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
def finish_step(r, extra):  # type: ignore[no-untyped-def]
    """Close a step that decoded the decoders and prefilled `r.work`, its energy `extra` step
    constants off the coefficients': first tokens in `r.first`, completions in `r.done`."""
    _add_share(r, (1.0 + extra) / (r.B + r.nwork))
    r.N += 1
    r.S += r.B
    r.ndone = r.nfirst = 0
    if r.sn and r.ss[0] <= r.N:
        _saturate(r)
    if r.hn and r.hf[0] <= r.N:
        _complete(r)
    prefilled = 0
    for i in range(r.nwork):
        if r.work_j[i] == r.part_j:
            r.part_j = -1  # its chunk ran: set again below if the prompt is still unfinished
    for i in range(r.nwork):
        j, m, past = r.work_j[i], r.work_m[i], r.work_past[i]
        r.chunks[j] += 1
        gen = r.generated[j]
        target = r.n_in[j] + gen
        if past + m < target:
            r.part_j, r.part_done, r.part_target = j, past + m, target
            continue
        prefilled += 1
        prefix.register(r, j)
        if gen == 0:
            r.first[r.nfirst] = j
            r.nfirst += 1
        gen += 1
        r.generated[j] = gen
        r.pending -= r.n_in[j] + r.n_out[j]
        if gen == r.n_out[j]:
            _finish(r, j, target)
        else:
            _start_decoding(r, j)
    r.prefilled = prefilled


@njit(cache=True)
def _start_decoding(r, j):  # type: ignore[no-untyped-def]
    n = r.N
    gen = r.generated[j]
    ctx = r.n_in[j] + gen  # context of its next decode step
    f = n + r.n_out[j] - gen
    key = (ctx - 1 - n) % r.bs
    weight = 0
    if not r.reserve:
        weight = r.full
        sat_ctx = (r.wblocks - 1) * r.bs + 1
        if r.wunits and ctx <= sat_ctx:
            weight += r.wunits
            if n + 1 + sat_ctx - ctx < f:
                saturation_push(r, n + 1 + sat_ctx - ctx, f, j)
    d = decoder_slot(r, j)
    r.dec_f[d], r.dec_key[d], r.dec_w[d] = f, key, weight
    finish_push(r, f, j)
    phase_add(r, key, weight)
    r.fsum += f
    r.fmax = f if r.B == 0 or f > r.fmax else r.fmax
    r.B += 1
    r.S += ctx


@njit(cache=True)
def _stop_decoding(r, j):  # type: ignore[no-untyped-def]
    """Remove decoder j; returns its next context."""
    d = r.slot[j]
    f = r.dec_f[d]
    phase_add(r, r.dec_key[d], -r.dec_w[d])
    decoder_free(r, j)
    ctx = r.n_in[j] + r.n_out[j] - (f - r.N)
    r.B -= 1
    r.S -= ctx
    r.fsum -= f
    return ctx


@njit(cache=True)
def _saturate(r):  # type: ignore[no-untyped-def]
    """Decoders whose windowed layers just filled their window allocate full-layer blocks only."""
    while r.sn and r.ss[0] <= r.N:
        f0, j = r.sf[0], r.sj[0]
        heap_pop(r.ss, r.sf, r.sj, r.sn)
        r.sn -= 1
        d = r.slot[j]
        if d < 0 or r.dec_f[d] != f0 or r.dec_w[d] <= r.full:
            continue
        phase_add(r, r.dec_key[d], r.full - r.dec_w[d])
        r.dec_w[d] = r.full


@njit(cache=True)
def _complete(r):  # type: ignore[no-untyped-def]
    """Decoders whose last step has run leave; appended to `r.done`."""
    share = r.share + r.share_c
    n = r.N
    while r.hn and r.hf[0] <= n:
        f, j = r.hf[0], r.hj[0]
        heap_pop(r.hf, r.hj, r.hj, r.hn)
        r.hn -= 1
        if finish_of(r, j) != f:
            continue
        _stop_decoding(r, j)
        length = r.n_in[j] + r.n_out[j]
        r.generated[j] = r.n_out[j]
        run_remove(r, j)
        r.used -= units(r, length) if r.reserve else prefix.drop(r, j, length - 1)
        r.share_of[j] += share
        r.status[j] = DONE
        r.done[r.ndone] = j
        r.ndone += 1


@njit(cache=True)
def _finish(r, j, kv_tokens):  # type: ignore[no-untyped-def]
    """Job j emitted its last token in a prefill step."""
    run_remove(r, j)
    r.used -= units(r, r.n_in[j] + r.n_out[j]) if r.reserve else prefix.drop(r, j, kv_tokens)
    r.share_of[j] += r.share + r.share_c
    r.status[j] = DONE
    r.done[r.ndone] = j
    r.ndone += 1


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
    ctx = _stop_decoding(r, j)
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

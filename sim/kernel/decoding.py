"""Running a replica's steps, compiled: decode spans, closing a step, the decoders and their
completions, on a `sim.kernel.state.Replica`. The rules and their conventions are those of the
simple reference `sim.engine.simple.SimpleEngine` (its docstring says them in plain words),
which runs one step at a time; the results agree to 1e-9 relative (tests/sim/engine/test_simple.py).
The steps are formed in `sim.kernel.admission`.

Fast spans: while no prompt is being prefilled and the queue cannot be admitted, every step is a
plain decode step of the same sequences. A decoder needs a new block every `block_size` steps, at a
phase fixed while it decodes, so the blocks a span allocates are a sum over a table of weights by
phase (`sim.kernel.kv`); `span_limit` is the number of steps until the next completion,
sliding-window saturation, the first step whose blocks would not fit, the scheduler's
`steady_steps`, or an eviction from the prefix cache that could change the queue head's admission.

A request's share of the steps' constant energy is a running sum of 1/(sequences in the step),
each step's term scaled by 1 + its `extra` (the energy a power cap's lower clock saved, in step
constants), so that the requests' charges add up to the steps' energy. The jobs a step or span
completed are `r.done` (`r.ndone`) and the prompts that emitted their first token `r.first`
(`r.nfirst`).
"""

from __future__ import annotations

from numba import njit

from sim.engine.jobs import DONE
from sim.kernel import hooks, prefix
from sim.kernel.kv import over, phase_add, steps_within, units
from sim.kernel.lists import (
    decoder_free,
    decoder_slot,
    finish_of,
    finish_push,
    heap_pop,
    run_remove,
    saturation_push,
)


@njit(cache=True, inline="always")
def _add_share(r, x):  # type: ignore[no-untyped-def]
    """r.share += x with Neumaier compensation (`sim.engine.ledger.compensated_add`)."""
    total = r.share
    v = total + x
    r.share_c += (total - v) + x if total >= x else (x - v) + total
    r.share = v


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
def stop_decoding(r, j):  # type: ignore[no-untyped-def]
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
        stop_decoding(r, j)
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

"""What routers' compiled picks read (`sim.kernel.picks` dispatches to them): each replica's
outstanding tokens (`f.load`) and steps until its last decoder finishes (`f.finish`), kept up to
date by the fleet loop (`note`), so that a pick scans two arrays; the least loaded replica of a
range; the estimates `energy_aware` checks its SLO with (`sim.serving.estimates` computes the same
in Python). Replicas are in pool order, pool p being replicas `f.pool_lo[p]` to `f.pool_hi[p] − 1`.
"""

from __future__ import annotations

import math

from numba import njit

from sim.kernel.linear import const_at


@njit(cache=True)
def note(f, r, k):  # type: ignore[no-untyped-def]
    """Replica k (r) changed: keep its load and finish steps for the picks."""
    f.load[k] = r.pending + r.fsum - r.B * r.N
    f.finish[k] = r.fmax - r.N if r.B else 0


@njit(cache=True)
def least(f, lo, hi):  # type: ignore[no-untyped-def]
    """The replica in [lo, hi) with the least outstanding tokens (the first of equals)."""
    load = f.load
    best, best_w = lo, load[lo]
    for k in range(lo + 1, hi):
        if load[k] < best_w:
            best, best_w = k, load[k]
    return best


@njit(cache=True)
def sequence_cost(c, n_in, n_out):  # type: ignore[no-untyped-def]
    """A request's own cost of one prefill chunk and its decode steps (`sim.engine.costs.sequence_cost`)."""
    k = n_out - 1
    prefill = c[3] * 1 + c[4] * n_in + c[5] * n_in * (n_in + 1) / 2
    decode = k * (c[1] + c[2] * n_in) + c[2] * k * (k + 1) / 2
    return prefill + decode


@njit(cache=True)
def tpot_s(c, decoders, decode_ctx, recent_step_s, n_in):  # type: ignore[no-untyped-def]
    """Estimated time per output token (s) on a replica with `decoders` decoders whose contexts
    sum to `decode_ctx`: a decode step with this request added, or the recent step time (s) if
    longer (`sim.serving.estimates.tpot_estimate_s`); `c` the time coefficients."""
    decode = const_at(c, decoders + 1) + c[1] * (decoders + 1) + c[2] * (decode_ctx + n_in + 1)
    return max(decode, recent_step_s if decoders else 0.0)


@njit(cache=True)
def ttft_s(c, decoders, decode_ctx, queue_len, queued_prompt, n_in, max_num_tokens):  # type: ignore[no-untyped-def]
    """Estimated time to first token (s) on a replica whose queue and this request all fit the
    next step: the step under way, then prefill steps for the queued prompts and this one (one
    step per `max_num_tokens`, 0 for none; the queued prompts' attention left out)
    (`sim.serving.estimates.ttft_estimate_s`); `c` the time coefficients."""
    step = const_at(c, decoders) + c[1] * decoders + c[2] * decode_ctx
    tokens = queued_prompt + n_in
    steps = 1 if not max_num_tokens else max(1, math.ceil(tokens / max(max_num_tokens - decoders, 1)))
    seqs = queue_len + 1
    return step * (1 + steps) + c[3] * seqs + c[4] * tokens + c[5] * n_in * (n_in + 1) / 2


@njit(cache=True)
def kv_holds(free, queued, queue_len, state, n_in, n_out):  # type: ignore[no-untyped-def]
    """Whether `free` tokens of KV cache hold the queue's tokens (`queued`, Σ n_in + n_out of its
    `queue_len` requests), this request's, and, a hybrid's, each of those requests' state (`state`
    tokens' worth each; `sim.engine.kv.KvLayout.state_tokens`)."""
    return free >= queued + n_in + n_out + (queue_len + 1) * state


@njit(cache=True)
def meets_slo(f, r, p, n_in, n_out):  # type: ignore[no-untyped-def]
    """`sim.serving.estimates.meets_slo`: this request's TPOT and TTFT estimates on replica r within the bounds."""
    c = r.ct
    if tpot_s(c, r.B, r.S, r.step_avg, n_in) > f.tpot_s:
        return False
    per_block = r.full + r.wunits
    free_tokens = (r.cap - r.used) // per_block * r.bs
    state_tokens = -(-r.sunits // per_block) * r.bs
    if r.max_seqs - r.olen - r.qlen < 1 or not kv_holds(free_tokens, r.queued_need, r.qlen, state_tokens, n_in, n_out):
        return math.inf <= f.ttft_s
    return ttft_s(c, r.B, r.S, r.qlen, r.queued_prompt, n_in, f.pool_tokens[p]) <= f.ttft_s

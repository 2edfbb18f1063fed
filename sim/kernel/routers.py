"""Routers' picks, compiled: which replica of a routed fleet takes a request (`sim.serving.routers` says
the rules; the picks are the same). `f.router` picks the rule: `LEAST_TOKENS`, `LENGTH_AWARE`,
`ENERGY_AWARE` or `CACHE_AWARE`; a router class names its code in `Router.kernel_code`. Replicas are in pool
order, pool p being replicas `f.pool_lo[p]` to `f.pool_hi[p] − 1`. The fleet keeps each
replica's outstanding tokens (`f.load`) and steps until its last decoder finishes (`f.finish`)
up to date (`note`), so that a pick scans two arrays and reads a replica only to check its SLO.
"""

from __future__ import annotations

import math

from numba import njit

from sim.kernel import prefix
from sim.kernel.linear import const_at

LEAST_TOKENS, LENGTH_AWARE, ENERGY_AWARE, CACHE_AWARE = 1, 2, 3, 4


@njit(cache=True)
def note(f, r, k):  # type: ignore[no-untyped-def]
    """Replica k (r) changed: keep its load and finish steps for the picks."""
    f.load[k] = r.pending + r.fsum - r.B * r.N
    f.finish[k] = r.fmax - r.N if r.B else 0


@njit(cache=True)
def _least(f, lo, hi):  # type: ignore[no-untyped-def]
    """The replica in [lo, hi) with the least outstanding tokens (the first of equals)."""
    load = f.load
    best, best_w = lo, load[lo]
    for k in range(lo + 1, hi):
        if load[k] < best_w:
            best, best_w = k, load[k]
    return best


@njit(cache=True)
def _sequence_cost(c, n_in, n_out):  # type: ignore[no-untyped-def]
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
def _meets_slo(f, r, p, n_in, n_out):  # type: ignore[no-untyped-def]
    """`sim.serving.estimates.meets_slo`: this request's TPOT and TTFT estimates on replica r within the bounds."""
    c = r.ct
    if tpot_s(c, r.B, r.S, r.step_avg, n_in) > f.tpot_s:
        return False
    free_tokens = (r.cap - r.used) // (r.full + r.wunits) * r.bs
    if r.max_seqs - r.olen - r.qlen < 1 or free_tokens < r.queued_need + n_in + n_out:
        return math.inf <= f.ttft_s
    return ttft_s(c, r.B, r.S, r.qlen, r.queued_prompt, n_in, f.pool_tokens[p]) <= f.ttft_s


@njit(cache=True)
def _energy_aware(f, reps, n_in, n_out):  # type: ignore[no-untyped-def]
    """The replica that adds the least energy, then the least outstanding work, then the first,
    among those meeting the SLO; least tokens if none does (`sim.serving.routers.energy_aware.EnergyAware.pick`)."""
    best, best_e, best_w = -1, 0.0, 0
    for p in range(f.pool_lo.size):
        lo, hi = f.pool_lo[p], f.pool_hi[p]
        if tpot_s(reps[lo].ct, 0, 0, 0.0, n_in) > f.tpot_s:
            continue  # too slow on this GPU even alone
        own = _sequence_cost(reps[lo].ce, n_in, n_out)
        shared = f.pool_shared_j[p]
        for k in range(lo, hi):
            beyond = n_out - f.finish[k]
            e = own + (beyond if beyond > 0 else 0) * shared
            w = f.load[k]
            if best >= 0 and (e > best_e or (e == best_e and w >= best_w)):
                continue  # (k > best: an equal w loses to the earlier replica)
            if _meets_slo(f, reps[k], p, n_in, n_out):
                best, best_e, best_w = k, e, w
    return best if best >= 0 else _least(f, 0, f.load.size)


@njit(cache=True)
def _cache_aware(f, reps, j, n_in):  # type: ignore[no-untyped-def]
    """The replica with the best score: the share of job j's prompt it holds cached, less
    `f.cache_balance` × its load above the mean over the mean; then the least loaded, then the
    first (`sim.serving.routers.cache_aware.CacheAware.pick`)."""
    load = f.load
    mean = load.sum() / load.size
    scale = max(1.0, mean)
    best, best_s, best_w = -1, 0.0, 0
    for k in range(load.size):
        r = reps[k]
        cached = prefix.lookup(r, j, r.n_in[j] + r.generated[j])[0] * r.hb
        s = cached / n_in - f.cache_balance * ((load[k] - mean) / scale)
        if best < 0 or s > best_s or (s == best_s and load[k] < best_w):
            best, best_s, best_w = k, s, load[k]
    return best


@njit(cache=True)
def pick(f, reps, j, n_in, n_out):  # type: ignore[no-untyped-def]
    """The replica that takes job j, a request of these lengths (tokens), now."""
    if f.router == CACHE_AWARE:
        return _cache_aware(f, reps, j, n_in)
    if f.router == ENERGY_AWARE:
        return _energy_aware(f, reps, n_in, n_out)
    if f.router == LENGTH_AWARE:
        last = f.pool_lo.size - 1
        for p in range(last):
            if (f.pool_in[p] < 0 or n_in <= f.pool_in[p]) and (f.pool_out[p] < 0 or n_out <= f.pool_out[p]):
                return _least(f, f.pool_lo[p], f.pool_hi[p])
        return _least(f, f.pool_lo[last], f.pool_hi[last])
    return _least(f, 0, f.load.size)

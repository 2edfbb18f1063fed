"""What a scheduler plug-in decides, compiled: which sequence to preempt, the KV headroom and
reserve an admission must leave, requests never admitted, the steps over which those rules hold,
and the state a preemption changes. `r.hooks` picks the implementation: `BASE` (vLLM,
TensorRT-LLM: the most recently admitted sequence is the victim, no headroom) or `SGLANG` (see
`sim.schedulers.sglang` for the rules and their sources). A scheduler class names its code in
`Scheduler.kernel_hooks`.
"""

from __future__ import annotations

import math

from numba import njit

from sim.kernel.kv import units
from sim.kernel.lists import finish_of

BASE, SGLANG = 0, 1
FOREVER = 1 << 62


@njit(cache=True)
def never_admitted(r, n_in, n_out):  # type: ignore[no-untyped-def]
    """Whether a request of these lengths (tokens) could not be admitted even alone."""
    if r.hooks == SGLANG:
        return units(r, n_in + n_out) > r.cap
    return False


@njit(cache=True)
def _ratio(r):  # type: ignore[no-untyped-def]
    """SGLang's new_token_ratio at the next step."""
    return max(r.sg_r0 - r.sg_decay * (r.N - r.sg_n0), r.sg_min)


@njit(cache=True)
def headroom(r):  # type: ignore[no-untyped-def]
    """KV units an admission must leave free for the running sequences' growth."""
    if r.hooks != SGLANG:
        return 0
    if r.olen == 0:  # idle: SGLang re-initialises the ratio
        r.sg_r0, r.sg_n0 = r.sg_init, r.N
        return 0
    clip, n = r.sg_clip, r.N
    if r.B and r.fmax - n > clip:  # some output left is longer than the clip
        left = 0
        j = r.ohead
        while j >= 0:
            f = finish_of(r, j)
            if f >= 0:
                left += min(f - n, clip)
            j = r.nxt[j]
    else:  # none is (`fmax` bounds the decoders' finish steps): the running sum
        left = r.fsum - r.B * n
    if r.part_j >= 0:
        j = r.part_j
        left += min(r.n_out[j] - r.generated[j], clip)
    return units(r, math.ceil(left * _ratio(r)))


@njit(cache=True)
def reserve(r, j, chunk):  # type: ignore[no-untyped-def]
    """KV units an admission of job j sets aside beyond its prefill chunk of `chunk` tokens."""
    if r.hooks != SGLANG:
        return 0
    gen = r.generated[j]
    target = r.n_in[j] + gen
    left = min(r.n_out[j] - gen, r.sg_clip)
    return units(r, target + left) - units(r, chunk)


@njit(cache=True)
def steady_steps(r):  # type: ignore[no-untyped-def]
    """Steps of plain decode over which `headroom` and `reserve` keep their rule."""
    if r.hooks == SGLANG and r.qlen and _ratio(r) > r.sg_min:
        return 1
    return FOREVER


@njit(cache=True)
def victim(r):  # type: ignore[no-untyped-def]
    """The running sequence to preempt when the next step's KV does not fit."""
    if r.hooks != SGLANG or r.B == 0:
        return r.otail  # the most recently admitted
    # SGLang: the fewest output tokens, then the longest prompt; among equals the last admitted
    best, k0, k1, n = -1, 0, 0, r.N
    j = r.ohead
    while j >= 0:
        f = finish_of(r, j)
        if f >= 0:
            a, b = r.n_out[j] - (f - n), -r.n_in[j]
            if best < 0 or a < k0 or (a == k0 and b <= k1):
                best, k0, k1 = j, a, b
        j = r.nxt[j]
    return best


@njit(cache=True)
def preempted(r):  # type: ignore[no-untyped-def]
    """A step's preemptions are done: SGLang's ratio after a retraction."""
    if r.hooks != SGLANG:
        return
    asked = done = 0
    n = r.N
    j = r.ohead
    while j >= 0:
        f = finish_of(r, j)
        if f >= 0:
            asked += r.n_out[j]
            done += r.n_out[j] - (f - n)
        j = r.nxt[j]
    ratio = (done + r.sg_rds * r.B) / asked if asked else 1.0
    r.sg_r0, r.sg_n0 = min(ratio, 1.0), n

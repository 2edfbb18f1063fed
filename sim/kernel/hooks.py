"""What a scheduler plug-in decides, compiled: which sequence to preempt, the KV headroom and
reserve an admission must leave, requests never admitted, the steps over which those rules hold,
and the state a preemption changes. `r.hooks` picks the implementation: `BASE` (vLLM,
TensorRT-LLM: the most recently admitted sequence is the victim, no headroom) or `SGLANG` (see
`sim.schedulers.sglang` for the rules and their sources). A scheduler class names its code, and
its hooks' own settings and initial state (a replica's `hook_i`, `hook_f` arrays, laid out by the
constants here), in `Scheduler.kernel_settings`.
"""

from __future__ import annotations

import math

from numba import njit

from sim.kernel.kv import units
from sim.kernel.lists import finish_of

BASE, SGLANG = 0, 1
FOREVER = 1 << 62

# SGLang's settings and state in a replica's `hook_f` and `hook_i` (`Sglang.kernel_settings`)
SG_INIT, SG_MIN, SG_DECAY, SG_RATIO = 0, 1, 2, 3  # hook_f: new_token_ratio at start, floor, fall per step, set
SG_CLIP, SG_RETRACT, SG_SET_AT = 0, 1, 2  # hook_i: clip_max_new_tokens, retract_decode_steps, step the ratio was set


@njit(cache=True)
def never_admitted(r, n_in, n_out):  # type: ignore[no-untyped-def]
    """Whether a request of these lengths (tokens) could not be admitted even alone."""
    if r.hooks == SGLANG:
        return units(r, n_in + n_out) > r.cap
    return False


@njit(cache=True)
def _ratio(r):  # type: ignore[no-untyped-def]
    """SGLang's new_token_ratio at the next step."""
    f = r.hook_f
    return max(f[SG_RATIO] - f[SG_DECAY] * (r.N - r.hook_i[SG_SET_AT]), f[SG_MIN])


@njit(cache=True)
def headroom(r):  # type: ignore[no-untyped-def]
    """KV units an admission must leave free for the running sequences' growth."""
    if r.hooks != SGLANG:
        return 0
    if r.olen == 0:  # idle: SGLang re-initialises the ratio
        r.hook_f[SG_RATIO], r.hook_i[SG_SET_AT] = r.hook_f[SG_INIT], r.N
        return 0
    clip, n = r.hook_i[SG_CLIP], r.N
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
    left = min(r.n_out[j] - gen, r.hook_i[SG_CLIP])
    return units(r, target + left) - units(r, chunk)


@njit(cache=True)
def steady_steps(r):  # type: ignore[no-untyped-def]
    """Steps of plain decode over which `headroom` and `reserve` keep their rule. SGLang's headroom
    falls at every step while a request waits (the running requests' outputs left shrink, and its
    ratio falls to its floor), so each step may admit it: spans of one step then."""
    if r.hooks == SGLANG and r.qlen:
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
    ratio = (done + r.hook_i[SG_RETRACT] * r.B) / asked if asked else 1.0
    r.hook_f[SG_RATIO], r.hook_i[SG_SET_AT] = min(ratio, 1.0), n

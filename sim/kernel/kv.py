"""KV units and block phases of a replica, compiled (`sim.engine.kv.KvLayout.units`).

A decoder allocates a block every `block_size` steps, at a phase (step number modulo the block)
that stays fixed while it decodes, so the units all decoders allocate at step n are the weights
summed at phase −n mod block (`r.weights`, total `r.ptotal`): any span of steps costs whole cycles
of the total plus fewer than `block_size` table reads.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True)
def units(r, tokens):  # type: ignore[no-untyped-def]
    """KV units held by a sequence with KV for `tokens` tokens (its state's from the first token on)."""
    blocks = -(-tokens // r.bs)
    return (r.sunits if tokens > 0 else 0) + r.full * blocks + r.wunits * min(blocks, r.wblocks)


@njit(cache=True)
def step_need(r):  # type: ignore[no-untyped-def]
    """KV units the decoders allocate in the next step."""
    return r.weights[-r.N % r.bs]


@njit(cache=True)
def phase_add(r, key, weight):  # type: ignore[no-untyped-def]
    """A decoder allocating `weight` units at the steps n with −n ≡ key (mod block)."""
    r.weights[key] += weight
    r.ptotal += weight


@njit(cache=True)
def over(r, steps):  # type: ignore[no-untyped-def]
    """Units the decoders allocate in the next `steps` steps."""
    bs, w = r.bs, r.weights
    cycles, rest = divmod(steps, bs)
    out = cycles * r.ptotal
    lo = (1 - r.N - steps) % bs  # the phases of the remaining steps form one cyclic run from lo
    for i in range(rest):
        out += w[(lo + i) % bs]
    return out


@njit(cache=True)
def steps_within(r, limit, free):  # type: ignore[no-untyped-def]
    """The most steps ≤ limit from now whose allocations fit in `free` units."""
    if r.ptotal == 0:
        return limit
    cycles = free // r.ptotal
    k = cycles * r.bs
    if k >= limit:
        return limit
    free -= cycles * r.ptotal
    while k < limit:
        d = r.weights[-(r.N + k) % r.bs]
        if d > free:
            break
        free -= d
        k += 1
    return k

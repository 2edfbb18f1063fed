"""A replica's prefix cache, compiled: vLLM V1's automatic prefix caching in hashed blocks.

A prompt's full blocks of `r.hb` tokens (`sim.engine.prefix.PrefixBlocks`: dense ids per job) are cached
once its prefill has computed them. A cached block is held by the running jobs that reference it
(`r.c_ref`) and counted once in `r.used` (`r.bu` units); with no reference left it stays cached,
idle, in LRU order (`r.c_prev`, `r.c_next`, head `r.lru_h`, tail `r.lru_t`; `r.cidle` of them), and
counts as free memory: an allocation that needs its units evicts idle blocks from the LRU end,
so `r.used + r.cidle · r.bu ≤ r.cap` holds after every allocation (`evict`). An admitted job
references the longest run of its leading blocks that is cached (`lookup`, at most
(target − 1) // hb blocks: its last token is always computed) and prefills from there; a job's
own KV is its `units` less the blocks it references (`r.refs[j]` of them). A job that leaves
drops its references in reverse order, so that its last blocks are evicted first (vLLM's free
order). The same rules in plain Python are `sim.engine.prefix_cache.PrefixCache`'s; `r.pc` 0
turns all of them off.
"""

from __future__ import annotations

from numba import njit

from sim.kernel.kv import units
from sim.kernel.lists import append, unlink


@njit(cache=True)
def _cacheable(r, j, tokens):  # type: ignore[no-untyped-def]
    """The end of job j's blocks that lie within its first `tokens` tokens (an index into r.b_ids)."""
    return r.b_start[j] + min(r.b_count[j], tokens // r.hb)


@njit(cache=True)
def lookup(r, j, target):  # type: ignore[no-untyped-def]
    """(blocks of job j's prompt found cached, how many of them idle) for a prefill to `target` tokens."""
    if not r.pc:
        return 0, 0
    lo = r.b_start[j]
    hi = min(_cacheable(r, j, r.n_in[j]), lo + (target - 1) // r.hb)
    i, idle = lo, 0
    while i < hi:
        h = r.b_ids[i]
        if not r.c_in[h]:
            break
        if r.c_ref[h] == 0:
            idle += 1
        i += 1
    return i - lo, idle


@njit(cache=True)
def need(r, hits, idle, tokens):  # type: ignore[no-untyped-def]
    """KV units an admission allocates: its prompt's first `tokens` tokens, of which `hits` blocks
    are cached (`idle` of them held by no one, which it takes out of the free memory)."""
    return units(r, tokens) - (hits - idle) * r.bu


@njit(cache=True)
def take(r, j, hits):  # type: ignore[no-untyped-def]
    """Job j references its first `hits` blocks (found cached by `lookup`)."""
    lo = r.b_start[j]
    for i in range(lo, lo + hits):
        h = r.b_ids[i]
        if r.c_ref[h] == 0:
            _unlink(r, h)
        r.c_ref[h] += 1
    r.refs[j] = hits
    h = hits * r.hb
    r.cached[j] += h
    r.cached_pairs[j] += h * (h + 1) / 2


@njit(cache=True)
def register(r, j):  # type: ignore[no-untyped-def]
    """Job j's prefill is done: its prompt's full blocks are cached. A block cached meanwhile by
    another job is shared, its own copy freed."""
    if not r.pc:
        return
    lo = r.b_start[j]
    hi = _cacheable(r, j, r.n_in[j])
    for i in range(lo + r.refs[j], hi):
        h = r.b_ids[i]
        if r.c_in[h]:
            if r.c_ref[h] == 0:
                _unlink(r, h)  # the idle copy is used again, its own is freed: no change in units
            else:
                r.used -= r.bu
        else:
            r.c_in[h] = 1
        r.c_ref[h] += 1
    r.refs[j] = hi - lo


@njit(cache=True)
def drop(r, j, tokens):  # type: ignore[no-untyped-def]
    """Job j, holding KV for `tokens` tokens, leaves: the units this frees (its own and the
    cached blocks no one references any more, which stay cached, idle)."""
    held = units(r, tokens)
    if not r.pc or r.refs[j] == 0:
        return held
    lo = r.b_start[j]
    n = r.refs[j]
    held -= n * r.bu
    for i in range(lo + n - 1, lo - 1, -1):
        h = r.b_ids[i]
        r.c_ref[h] -= 1
        if r.c_ref[h] == 0:
            _append(r, h)
            held += r.bu
    r.refs[j] = 0
    return held


@njit(cache=True)
def evict(r, free):  # type: ignore[no-untyped-def]
    """Evict idle cached blocks, least recently used first, until the rest fit in `free` units."""
    while r.cidle * r.bu > free:
        h = r.lru_h
        _unlink(r, h)
        r.c_in[h] = 0
        r.evicted += 1


@njit(cache=True)
def head_idle(r):  # type: ignore[no-untyped-def]
    """Whether the queue's head would find idle cached blocks (an eviction could change its admission)."""
    if not r.pc or not r.cidle or not r.qlen:
        return False
    j = r.qhead
    return lookup(r, j, r.n_in[j] + r.generated[j])[1] > 0


@njit(cache=True, inline="always")
def _unlink(r, h):  # type: ignore[no-untyped-def]
    """Block h is no longer idle (taken out of the LRU list)."""
    r.lru_h, r.lru_t = unlink(r.c_prev, r.c_next, h, r.lru_h, r.lru_t)
    r.cidle -= 1


@njit(cache=True, inline="always")
def _append(r, h):  # type: ignore[no-untyped-def]
    """Block h becomes idle: the most recently used end of the LRU list."""
    r.lru_h, r.lru_t = append(r.c_prev, r.c_next, h, r.lru_h, r.lru_t)
    r.cidle += 1

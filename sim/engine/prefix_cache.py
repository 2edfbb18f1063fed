"""A replica's prefix cache as plain Python, the one the simple reference `sim.engine.simple.SimpleEngine` owns.

vLLM V1's automatic prefix caching (when `pc`): a prompt's full blocks of `hb` tokens
(`sim.engine.prefix.PrefixBlocks`) are cached once its prefill is done, shared by every running
sequence that references them and counted once in the engine's `used` (`bu` units each); with no
reference left a block stays cached, idle, and counts as free memory: an allocation that needs it
evicts idle blocks, least recently used first. An admission references its prompt's longest
cached run of leading blocks (never its last token) and prefills from there. `sim.kernel.prefix`
says the rules in full and runs them compiled, with the same results bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

from sim.engine.jobs import JobTable


class PrefixCache:
    """The cached prompt blocks of one replica and the jobs referencing them."""

    __slots__ = ("blocks_cached", "bu", "evicted", "hb", "idle_blocks", "jobs", "pc", "refs", "units")

    def __init__(self, jobs: JobTable, pc: bool, hb: int, bu: int, units: Callable[[int], int]) -> None:
        self.jobs, self.units = jobs, units  # units: KV units of a sequence holding `tokens` tokens
        self.pc, self.hb, self.bu = pc, hb, bu  # prefix cache on; tokens, units a block
        self.blocks_cached: dict[int, int] = {}  # cached block → sequences referencing it
        self.idle_blocks: dict[int, None] = {}  # cached blocks no one references, least recently used first
        self.refs: dict[int, int] = {}  # job → its leading blocks it references
        self.evicted = 0

    def blocks(self, j: int, tokens: int) -> list[int]:
        """Job j's prompt blocks within its first `tokens` tokens (none without a prefix cache)."""
        b = self.jobs.prefix
        if not self.pc or b is None:
            return []
        start = int(b.starts[j])
        n = min(int(b.counts[j]), self.jobs.n_in[j] // self.hb, tokens // self.hb)
        return b.ids[start : start + n].tolist()  # type: ignore[no-any-return]

    def lookup(self, j: int, target: int) -> tuple[int, int]:
        """(leading blocks of job j found cached, of them idle) for a prefill to `target` tokens
        (its last token is always computed)."""
        hits = idle = 0
        for h in self.blocks(j, target - 1):
            if h not in self.blocks_cached:
                break
            hits += 1
            idle += h in self.idle_blocks
        return hits, idle

    def take(self, j: int, hits: int) -> None:
        """Job j references its first `hits` blocks, found cached."""
        for h in self.blocks(j, hits * self.hb):
            self.idle_blocks.pop(h, None)
            self.blocks_cached[h] += 1
        self.refs[j] = hits
        h = hits * self.hb
        self.jobs.cached_tokens[j] += h
        self.jobs.cached_pairs[j] += h * (h + 1) / 2

    def register(self, j: int) -> int:
        """Job j's prefill is done: its prompt's full blocks are cached (a block another job
        cached meanwhile is shared, j's own copy freed); returns the KV units freed."""
        blocks, freed = self.blocks(j, self.jobs.n_in[j]), 0
        for h in blocks[self.refs.get(j, 0) :]:
            if h in self.idle_blocks:
                del self.idle_blocks[h]  # the idle copy is used again, j's own is freed: no change in units
            elif h in self.blocks_cached:
                freed += self.bu  # shared with the sequences holding it: j's own copy is freed
            self.blocks_cached[h] = self.blocks_cached.get(h, 0) + 1
        if blocks:
            self.refs[j] = len(blocks)
        return freed

    def drop(self, j: int, tokens: int) -> int:
        """Job j, holding KV for `tokens` tokens, leaves: the units freed (its own, and the
        blocks no one references any more, which stay cached, idle, its last ones first)."""
        refs = self.refs.pop(j, 0)
        held = self.units(tokens) - refs * self.bu
        for h in reversed(self.blocks(j, refs * self.hb)):
            self.blocks_cached[h] -= 1
            if not self.blocks_cached[h]:
                self.idle_blocks[h] = None
                held += self.bu
        return held

    def evict(self, free: int) -> None:
        """Evict idle blocks, least recently used first, until the rest fit in `free` units."""
        idle = self.idle_blocks
        while len(idle) * self.bu > free:
            h = next(iter(idle))
            del idle[h], self.blocks_cached[h]
            self.evicted += 1

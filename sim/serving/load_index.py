"""`LoadIndex`: the replicas of one group ordered by load (outstanding tokens, steps until the
last decoder finishes), kept by the routers that read load (`sim.serving.routers`) so that a pick
re-reads only the replicas whose engine changed since the last one.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Sequence
from functools import partial

from sim.serving.server import Server


class LoadIndex:
    """The replicas of one group by load, re-read only for those whose engine changed.

    Each replica's `Server.on_change` marks it; a query first re-reads the marked replicas (their
    outstanding tokens and, with `by_finish`, the steps until their last decoder finishes), so it
    costs O(changed × log n) rather than a pass over all n. `least()` keeps a heap of
    (tokens, position) with lazy deletion; `order` is a list sorted by (−finish steps, tokens,
    position). Positions are indices into `servers`, which are in index order.
    """

    def __init__(self, servers: Sequence[Server], by_finish: bool = False) -> None:
        self.servers = list(servers)
        self._engines = [s.engine for s in self.servers]
        self.tokens = [e.outstanding_tokens() for e in self._engines]
        self._heap = [(w, i) for i, w in enumerate(self.tokens)]
        heapq.heapify(self._heap)
        self._by_finish = by_finish
        self._keys = [
            (-e.last_finish_steps, w, i) for i, (e, w) in enumerate(zip(self._engines, self.tokens, strict=True))
        ]
        self.order = sorted(self._keys) if by_finish else []
        self._changed: set[int] = set()
        for i, s in enumerate(self.servers):
            assert s.on_change is None, f"replica {s.name} already reports to another index"
            s.on_change = partial(self._changed.add, i)

    def refresh(self) -> None:
        """Re-read the replicas that reported a change since the last refresh."""
        changed = self._changed
        if not changed:
            return
        engines, tokens, heap, push = self._engines, self.tokens, self._heap, heapq.heappush
        for i in changed:
            e = engines[i]
            w = e.outstanding_tokens()
            if w != tokens[i]:
                tokens[i] = w
                push(heap, (w, i))
        if self._by_finish:
            keys, order = self._keys, self.order
            for i in changed:
                key = (-engines[i].last_finish_steps, tokens[i], i)
                if key != keys[i]:
                    del order[bisect.bisect_left(order, keys[i])]
                    bisect.insort(order, key)
                    keys[i] = key
        changed.clear()
        self._trim()

    def _trim(self) -> None:
        """With more stale heap entries than live ones by far, start the heap afresh."""
        heap, tokens = self._heap, self.tokens
        if len(heap) > 4 * len(tokens) + 64:
            heap[:] = [(w, i) for i, w in enumerate(tokens)]
            heapq.heapify(heap)

    def least(self) -> Server:
        """The replica with the least outstanding tokens (the first of equals)."""
        heap, tokens = self._heap, self.tokens
        if self._changed:
            self.refresh()
        while heap[0][0] != tokens[heap[0][1]]:
            heapq.heappop(heap)
        return self.servers[heap[0][1]]

"""`length_aware`: the first pool whose length bounds admit the request (DynamoLLM-style input/output
bins; the output length is the trace's, i.e. a perfect length predictor), then least tokens within
the pool."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from sim.kernel.routers import least
from sim.serving.fleet import Fleet
from sim.serving.load_index import LoadIndex
from sim.serving.routers import register
from sim.serving.routers.base import Router
from sim.serving.server import Server


@njit(cache=True)
def kernel_pick(f, reps, j, n_in, n_out):  # type: ignore[no-untyped-def]
    """The least loaded replica of the first pool whose bounds (`f.pool_in`, `f.pool_out`; −1:
    none) admit the request, the last pool's if none does (compiled `pick`)."""
    last = f.pool_lo.size - 1
    for p in range(last):
        if (f.pool_in[p] < 0 or n_in <= f.pool_in[p]) and (f.pool_out[p] < 0 or n_out <= f.pool_out[p]):
            return least(f, f.pool_lo[p], f.pool_hi[p])
    return least(f, f.pool_lo[last], f.pool_hi[last])


@register
class LengthAware(Router):
    """The first pool whose bounds admit the request, least tokens within it."""

    name = "length_aware"
    kernel_pick = staticmethod(kernel_pick)

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        super().__init__(fleet, servers)
        self.static = all(len(group) == 1 for group in self.by_pool)
        self._indexes = self.load_indexes = [LoadIndex(group) for group in self.by_pool]

    def pool_index(self, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
        """Index of the pool each request goes to (the last pool is unbounded)."""
        i, o = np.asarray(n_in), np.asarray(n_out)
        out = np.full(i.size, len(self.fleet.pools) - 1, dtype=np.int64)
        for k in range(len(self.fleet.pools) - 2, -1, -1):
            out[np.broadcast_to(self.fleet.pools[k].admits(i, o), i.shape)] = k
        return out

    def pick(self, n_in: int, n_out: int, job: int = -1) -> Server:
        for p, index in zip(self.fleet.pools, self._indexes, strict=True):
            if p.admits(n_in, n_out):
                return index.least()
        return self._indexes[-1].least()

    def assign(self, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
        if not self.static:
            return super().assign(n_in, n_out)
        index = np.array([group[0].index for group in self.by_pool], dtype=np.int64)
        return index[self.pool_index(n_in, n_out)]

"""`least_tokens`: the replica with the least outstanding work in tokens (queued prompts and outputs
plus the outputs its decoders still owe), read from a `LoadIndex` per pool."""

from __future__ import annotations

from collections.abc import Sequence

from numba import njit

from sim.kernel.routers import least
from sim.serving.fleet import Fleet
from sim.serving.load_index import LoadIndex
from sim.serving.routers import register
from sim.serving.routers.base import Router
from sim.serving.server import Server


@njit(cache=True)
def kernel_pick(f, reps, j, n_in, n_out):  # type: ignore[no-untyped-def]
    """The replica with the least outstanding tokens, the first of equals (compiled `pick`)."""
    return least(f, 0, f.load.size)


@register
class LeastTokens(Router):
    """The replica with the least outstanding work (tokens)."""

    name = "least_tokens"
    kernel_pick = staticmethod(kernel_pick)

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        super().__init__(fleet, servers)
        self._index = LoadIndex(self.servers)
        self.load_indexes = [self._index]

    def pick(self, n_in: int, n_out: int, job: int = -1) -> Server:
        return self._index.least()

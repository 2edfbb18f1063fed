"""What a router is: `Router`, which picks the replica of a fleet that takes each request."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sim.serving.fleet import Fleet
from sim.serving.load_index import LoadIndex
from sim.serving.server import Server


class Router:
    """Picks a server for each request; `static` routers can also assign a whole trace.

    `kernel_pick`: the router's pick compiled, a numba function `(f, reps, j, n_in, n_out)`
    of the fleet `f` (`sim.kernel.fleet`) and its replicas, returning the index of the replica
    that takes job j (the same rule as `pick`; it reads what `sim.kernel.routers` keeps), which
    runs a fleet with no dynamic policy and no summaries in the compiled loop; without one, the
    fleet runs under SimPy. Written in the router's module, wrapped in `staticmethod`; a subclass
    that writes its own `pick` must write its own `kernel_pick` too, or it runs under SimPy.
    """

    name: str
    static = False
    kernel_pick: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass with a `pick` of its own and no `kernel_pick` of its own runs under SimPy:
        the compiled pick it would inherit says another rule."""
        super().__init_subclass__(**kwargs)
        if "pick" in cls.__dict__ and "kernel_pick" not in cls.__dict__:
            cls.kernel_pick = None

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        self.fleet, self.servers = fleet, list(servers)
        self.load_indexes: list[LoadIndex] = []  # the indexes its picks read
        self.by_pool = [[s for s in self.servers if s.pool == p.name] for p in fleet.pools]
        if len(self.servers) == 1:
            self.static = True

    def pick(self, n_in: int, n_out: int, job: int = -1) -> Server:
        """The server that takes a request of these (served) lengths, now (`job`: its job id, for
        routers that read the replicas' prefix caches; −1 when unknown)."""
        raise NotImplementedError

    def assign(self, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
        """Server index of every request (static routers only)."""
        if len(self.servers) == 1:
            return np.zeros(np.asarray(n_in).size, dtype=np.int64)
        raise TypeError(f"router {self.fleet.router!r} decides per arrival and cannot assign up front")

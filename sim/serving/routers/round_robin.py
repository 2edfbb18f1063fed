"""`round_robin`: replicas in turn, blind to load and lengths (a Kubernetes Service); static, so a
whole trace is assigned up front and the servers read it with no events."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.serving.fleet import Fleet
from sim.serving.routers import register
from sim.serving.routers.base import Router
from sim.serving.server import Server


@register
class RoundRobin(Router):
    """Replicas in turn."""

    name = "round_robin"
    static = True

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        super().__init__(fleet, servers)
        self._next = 0

    def pick(self, n_in: int, n_out: int, job: int = -1) -> Server:
        s = self.servers[self._next]
        self._next = (self._next + 1) % len(self.servers)
        return s

    def assign(self, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
        n = np.asarray(n_in).size
        out = (self._next + np.arange(n)) % len(self.servers)
        self._next = (self._next + n) % len(self.servers)
        return out

"""Routers: which replica of a fleet takes a request.

- `round_robin`: replicas in turn, blind to load and lengths (a Kubernetes Service).
- `least_tokens`: the replica with the least outstanding work in tokens (queued prompts and
  outputs plus the outputs its decoders still owe).
- `length_aware`: the first pool whose length bounds admit the request (DynamoLLM-style
  input/output bins; the output length is the trace's, i.e. a perfect length predictor), then
  least tokens within the pool.
- `energy_aware`: among the replicas whose estimated TTFT and TPOT stay within `slo_headroom` × the
  SLO, the one where the request adds the least energy; if none qualifies, least tokens.
- `cache_aware`: the replica with the best score, the share of the prompt it holds in its prefix
  cache less `cache_balance` × (its outstanding tokens − the mean) / max(1, the mean): the vLLM
  production stack's load-aware KV-cache routing (docs.vllm.ai/projects/production-stack,
  "Load Aware Routing"; its load counts requests in flight, this one tokens), reading each
  replica's cache as it is (an ideal index of it, as llm-d and SGLang's router approximate).

Each router is a `Router` subclass registered by name with `@register` (`ROUTERS`, what
`fleet.router` names); config validation, `--help` and the tests read the registry.

The estimates `energy_aware` reads are `sim.serving.estimates`. A router that can decide without
server state (`static`) assigns the whole trace up front, and the servers read it with no events.
The others keep a `LoadIndex` (`sim.serving.load_index`) per pool, told by each replica when its
engine changed, so that a pick re-reads the few replicas that changed since the last one instead
of every replica; the picks are those of the definitions above (tested against a pass over every
replica).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.engine.costs import sequence_cost
from sim.kernel.routers import CACHE_AWARE, ENERGY_AWARE, LEAST_TOKENS, LENGTH_AWARE
from sim.registry import Registry
from sim.serving.estimates import IDLE, added_energy_j, meets_slo, shared_above_idle_j, tpot_estimate_s
from sim.serving.fleet import Fleet
from sim.serving.load_index import LoadIndex
from sim.serving.server import Server

ROUTERS: Registry[type[Router]] = Registry("router")  # name → its class
register = ROUTERS.register


class Router:
    """Picks a server for each request; `static` routers can also assign a whole trace.

    `kernel_code`: the router's compiled picks (`sim.kernel.routers`), which run a fleet with no
    dynamic policy and no summaries in the compiled loop (`sim.kernel.fleet`); without one, the
    fleet runs under SimPy.
    """

    name: str
    static = False
    kernel_code: int | None = None

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


@register
class LeastTokens(Router):
    """The replica with the least outstanding work (tokens)."""

    name = "least_tokens"
    kernel_code = LEAST_TOKENS

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        super().__init__(fleet, servers)
        self._index = LoadIndex(self.servers)
        self.load_indexes = [self._index]

    def pick(self, n_in: int, n_out: int, job: int = -1) -> Server:
        return self._index.least()


@register
class LengthAware(Router):
    """The first pool whose bounds admit the request, least tokens within it."""

    name = "length_aware"
    kernel_code = LENGTH_AWARE

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


@register
class EnergyAware(Router):
    """Least marginal energy among replicas whose estimated TTFT and TPOT meet the SLO."""

    name = "energy_aware"
    kernel_code = ENERGY_AWARE

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        super().__init__(fleet, servers)
        self._groups = [
            (group[0].costs, shared_above_idle_j(group[0].costs), LoadIndex(group, by_finish=True))
            for group in self.by_pool
        ]
        self.load_indexes = [index for _, _, index in self._groups]

    def pick(self, n_in: int, n_out: int, job: int = -1) -> Server:
        """The replica that adds the least energy (then the least outstanding work, then the
        first) among those meeting the SLO; least tokens if none does.

        Within a pool the added energy only grows as the steps until a replica's last decoder
        finishes shrink, so the walk goes down `LoadIndex.order` and stops at the first replica
        that adds more than the best found: it visits the replicas whose decoders outlast the
        request, then few others. The SLO estimates, which need more of a replica's state, are
        computed only for one that would win, from its engine in place (no snapshot).
        """
        h = self.fleet.slo_headroom
        ttft_s, tpot_s = h * self.fleet.slo.ttft_s, h * self.fleet.slo.tpot_s
        best, best_e, best_w, best_i = None, 0.0, 0, 0
        for costs, shared, index in self._groups:
            if tpot_estimate_s(costs, IDLE, n_in) > tpot_s:
                continue  # too slow on this GPU even alone
            own = sequence_cost(costs.energy_j, n_in, n_out)
            index.refresh()
            servers = index.servers
            for neg_finish, w, i in index.order:
                e = added_energy_j(own, n_out, -neg_finish, shared)
                s = servers[i]
                if best is not None:
                    if e > best_e:
                        break  # every replica further down adds at least as much
                    if e == best_e and (w > best_w or (w == best_w and s.index > best_i)):
                        continue
                if not meets_slo(costs, s, n_in, n_out, ttft_s, tpot_s):
                    continue
                best, best_e, best_w, best_i = s, e, w, s.index
        if best is not None:
            return best
        least = [index.least() for _, _, index in self._groups]
        return min(least, key=lambda s: (s.engine.outstanding_tokens(), s.index))


@register
class CacheAware(LeastTokens):
    """The most of the prompt cached, weighed against load (see the module docstring); least
    tokens for a request whose job is not known."""

    name = "cache_aware"
    kernel_code = CACHE_AWARE

    def pick(self, n_in: int, n_out: int, job: int = -1) -> Server:
        """Score = cached share of the prompt − cache_balance × (load − mean) / max(1, mean);
        the best, then the least loaded, then the first."""
        index = self._index
        if job < 0:
            return index.least()
        index.refresh()
        loads = index.tokens
        mean = sum(loads) / len(loads)
        scale = max(1.0, mean)
        beta = self.fleet.cache_balance
        best, best_s, best_w = 0, 0.0, 0
        for k, (s, w) in enumerate(zip(self.servers, loads, strict=True)):
            score = s.engine.cached_tokens(job) / n_in - beta * ((w - mean) / scale)
            if k == 0 or score > best_s or (score == best_s and w < best_w):
                best, best_s, best_w = k, score, w
        return self.servers[best]


def make_router(fleet: Fleet, servers: Sequence[Server]) -> Router:
    """The fleet's router over its serving replicas (in pool order)."""
    if fleet.router not in ROUTERS:
        raise ValueError(f"router must be one of {tuple(ROUTERS)}, got {fleet.router!r}")
    return ROUTERS[fleet.router](fleet, servers)

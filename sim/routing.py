"""Routers: which replica of a fleet takes a request.

- `round_robin`: replicas in turn, blind to load and lengths (a Kubernetes Service).
- `least_tokens`: the replica with the least outstanding work in tokens (queued prompts and
  outputs plus the outputs its decoders still owe).
- `length_aware`: the first pool whose length bounds admit the request (DynamoLLM-style
  input/output bins; the output length is the trace's, i.e. a perfect length predictor), then
  least tokens within the pool.
- `energy_aware`: among the replicas whose estimated TTFT and TPOT stay within `slo_headroom` × the
  SLO, the one where the request adds the least energy; if none qualifies, least tokens.

The estimates (`marginal_energy_j`, `ttft_estimate_s`, `tpot_estimate_s`) are pure functions of
a replica's step costs and its state at the last step boundary. A router that can decide without
server state (`static`) assigns the whole trace up front, and the servers read it with no events.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from oracle.features import StepCoef
from sim.costs import StepCosts, sequence_cost
from sim.fleet import Fleet
from sim.jobs import ServerState
from sim.server import Server


def marginal_energy_j(costs: StepCosts, state: ServerState, n_in: int, n_out: int, own_j: float | None = None) -> float:
    """Energy (J) a replica spends because it also serves this request.

    Its own sequence cost, plus the shared step cost (above idle power) of every step it keeps
    the replica busy beyond the decoders already running: all n_out steps on an idle replica,
    max(0, n_out − steps until the last decoder finishes) on a busy one.
    """
    own = sequence_cost(costs.energy_j, n_in, n_out) if own_j is None else own_j
    busy_for = state.last_finish_steps if state.decoders else 0
    return _added_energy_j(own, n_out, busy_for, _shared_above_idle_j(costs))


def _added_energy_j(own_j: float, n_out: int, busy_for: int, shared_j: float) -> float:
    """A request's own cost plus the shared cost of the steps it keeps a replica busy beyond the
    `busy_for` steps its decoders already will (J)."""
    return own_j + max(0, n_out - busy_for) * shared_j


def _shared_above_idle_j(costs: StepCosts) -> float:
    """Energy (J) of one step's shared cost above what the idle GPU would draw over it anyway."""
    return max(costs.energy_j.const - costs.idle_power_w * costs.time_s.const, 0.0)


def _decode_step_s(c: StepCoef, state: ServerState) -> float:
    return c.const + c.decode_seqs * state.decoders + c.decode_ctx * state.decode_ctx


def ttft_estimate_s(
    costs: StepCosts, state: ServerState, n_in: int, n_out: int, max_batch_size: int, max_num_tokens: int | None
) -> float:
    """Estimated time to first token (s) on a replica: the step under way, then prefill steps for
    the queued prompts and this one (one step per `max_num_tokens`; the queued prompts' attention
    is left out).

    Infinite when the queue and this request would not all be admitted at the next step boundary
    (batch full, or too little free KV cache): that wait depends on completions the state does
    not predict well, so the router treats it as an SLO risk.
    """
    room = max_batch_size - state.running - state.queue_len
    if room < 1 or state.kv_free_tokens < state.queued_kv_tokens + n_in + n_out:
        return math.inf
    c = costs.time_s
    step = _decode_step_s(c, state)
    tokens = state.queued_prompt_tokens + n_in
    steps = 1 if not max_num_tokens else max(1, math.ceil(tokens / max(max_num_tokens - state.decoders, 1)))
    seqs = state.queue_len + 1
    return (
        step * (1 + steps) + c.prefill_seqs * seqs + c.prefill_tokens * tokens + c.prefill_attn * n_in * (n_in + 1) / 2
    )


def tpot_estimate_s(costs: StepCosts, state: ServerState, n_in: int) -> float:
    """Estimated time per output token (s): a decode step with this request added to the batch."""
    c = costs.time_s
    decode = c.const + c.decode_seqs * (state.decoders + 1) + c.decode_ctx * (state.decode_ctx + n_in + 1)
    return max(decode, state.recent_step_s if state.decoders else 0.0)


class Router:
    """Picks a server for each request; `static` routers can also assign a whole trace."""

    static = False

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        self.fleet, self.servers = fleet, list(servers)
        self.by_pool = [[s for s in self.servers if s.pool == p.name] for p in fleet.pools]
        if len(self.servers) == 1:
            self.static = True

    def pick(self, n_in: int, n_out: int) -> Server:
        """The server that takes a request of these (served) lengths, now."""
        raise NotImplementedError

    def assign(self, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
        """Server index of every request (static routers only)."""
        if len(self.servers) == 1:
            return np.zeros(np.asarray(n_in).size, dtype=np.int64)
        raise TypeError(f"router {self.fleet.router!r} decides per arrival and cannot assign up front")


class RoundRobin(Router):
    """Replicas in turn."""

    static = True

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        super().__init__(fleet, servers)
        self._next = 0

    def pick(self, n_in: int, n_out: int) -> Server:
        s = self.servers[self._next]
        self._next = (self._next + 1) % len(self.servers)
        return s

    def assign(self, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
        n = np.asarray(n_in).size
        out = (self._next + np.arange(n)) % len(self.servers)
        self._next = (self._next + n) % len(self.servers)
        return out


def least_tokens(servers: Sequence[Server]) -> Server:
    """The server with the least outstanding tokens (the first of equals)."""
    best, low = servers[0], servers[0].outstanding_tokens()
    for s in servers[1:]:
        w = s.outstanding_tokens()
        if w < low:
            best, low = s, w
    return best


class LeastTokens(Router):
    """The replica with the least outstanding work (tokens)."""

    def pick(self, n_in: int, n_out: int) -> Server:
        return least_tokens(self.servers)


class LengthAware(Router):
    """The first pool whose bounds admit the request, least tokens within it."""

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        super().__init__(fleet, servers)
        self.static = all(len(group) == 1 for group in self.by_pool)

    def pool_index(self, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
        """Index of the pool each request goes to (the last pool is unbounded)."""
        i, o = np.asarray(n_in), np.asarray(n_out)
        out = np.full(i.size, len(self.fleet.pools) - 1, dtype=np.int64)
        for k in range(len(self.fleet.pools) - 2, -1, -1):
            out[np.broadcast_to(self.fleet.pools[k].admits(i, o), i.shape)] = k
        return out

    def pick(self, n_in: int, n_out: int) -> Server:
        for p, group in zip(self.fleet.pools, self.by_pool, strict=True):
            if p.admits(n_in, n_out):
                return least_tokens(group)
        return least_tokens(self.by_pool[-1])

    def assign(self, n_in: np.ndarray, n_out: np.ndarray) -> np.ndarray:
        if not self.static:
            return super().assign(n_in, n_out)
        index = np.array([group[0].index for group in self.by_pool], dtype=np.int64)
        return index[self.pool_index(n_in, n_out)]


class EnergyAware(Router):
    """Least marginal energy among replicas whose estimated TTFT and TPOT meet the SLO."""

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        super().__init__(fleet, servers)
        self._groups = [(group[0].costs, group) for group in self.by_pool]

    def pick(self, n_in: int, n_out: int) -> Server:
        """The replica that adds the least energy (then the least outstanding work, then the first)
        among those meeting the SLO. A replica's energy and work are read first, straight from its
        engine; the SLO estimates, which need its full state, only for one that would win."""
        h = self.fleet.slo_headroom
        ttft_s, tpot_s = h * self.fleet.slo.ttft_s, h * self.fleet.slo.tpot_s
        best, best_e, best_w = None, 0.0, 0
        for costs, group in self._groups:
            own = sequence_cost(costs.energy_j, n_in, n_out)
            if tpot_estimate_s(costs, _IDLE, n_in) > tpot_s:
                continue  # too slow on this GPU even alone
            shared = _shared_above_idle_j(costs)
            for s in group:
                engine = s.engine
                e = _added_energy_j(own, n_out, engine.last_finish_steps, shared)  # without the snapshot
                w = engine.outstanding_tokens()
                if best is not None and (e > best_e or (e == best_e and w >= best_w)):
                    continue  # could not win even if it met the SLO
                st = s.state()
                if tpot_estimate_s(costs, st, n_in) > tpot_s:
                    continue
                cfg = s.config
                if ttft_estimate_s(costs, st, n_in, n_out, cfg.max_batch_size, cfg.max_num_tokens) > ttft_s:
                    continue
                best, best_e, best_w = s, e, w
        return best if best is not None else least_tokens(self.servers)


_IDLE = ServerState(0, 0, 0)  # a replica with nothing to do

ROUTER_CLASSES: dict[str, type[Router]] = {
    "round_robin": RoundRobin,
    "least_tokens": LeastTokens,
    "length_aware": LengthAware,
    "energy_aware": EnergyAware,
}


def make_router(fleet: Fleet, servers: Sequence[Server]) -> Router:
    """The fleet's router over its serving replicas (in pool order)."""
    return ROUTER_CLASSES[fleet.router](fleet, servers)

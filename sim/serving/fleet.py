"""A fleet: pools of identical serving replicas (one model on one GPU kind each) behind a router.

`Fleet` is what the simulator and the routers take: oracles resolved, server configs built, the
router named (`sim.serving.routers.make_router` checks the name). Its configured form, the `fleet:`
section, is `sim.serving.fleet_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from oracle.model import Oracle
from sim.config import ServerConfig, SloConfig
from sim.schema import ConfigError

MAX_SERVERS = 30_000  # the job table stores a server index as int16


@dataclass(frozen=True)
class Pool:
    """Identical replicas of one (model, GPU) oracle under one engine config."""

    name: str
    oracle: Oracle
    server: ServerConfig
    replicas: int = 1
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None

    def admits(self, n_in: Any, n_out: Any) -> Any:
        """Whether requests of these lengths (tokens; scalars or arrays) are inside this pool's
        length bounds."""
        return (self.max_input_tokens is None or n_in <= self.max_input_tokens) & (
            self.max_output_tokens is None or n_out <= self.max_output_tokens
        )


@dataclass(frozen=True)
class Fleet:
    """Pools behind a router. The `energy_aware` router keeps its TTFT and TPOT estimates within
    `slo_headroom` × the `slo` targets (estimates miss prefill interference and later arrivals);
    the `cache_aware` router weighs a replica's load above the mean by `cache_balance` against
    the share of the prompt it holds cached."""

    pools: tuple[Pool, ...]
    router: str = "round_robin"
    slo: SloConfig = SloConfig()
    slo_headroom: float = 0.8
    cache_balance: float = 1.0

    def __post_init__(self) -> None:
        if not self.pools:
            raise ValueError("a fleet needs at least one pool")
        if not 0 < self.slo_headroom <= 1:
            raise ValueError(f"slo_headroom must be in (0, 1], got {self.slo_headroom}")
        if len({p.server.exact_steps for p in self.pools}) > 1:
            raise ConfigError("server.exact_steps must be the same in every pool")

    @classmethod
    def single(
        cls,
        oracle: Oracle,
        server: ServerConfig,
        replicas: int = 1,
        router: str = "round_robin",
        slo: SloConfig | None = None,
    ) -> Fleet:
        """`replicas` copies of one (oracle, server) in a pool named 'main'."""
        return cls((Pool("main", oracle, server, replicas),), router, slo or SloConfig())

    @property
    def replicas(self) -> int:
        """Serving replicas in all pools."""
        return sum(p.replicas for p in self.pools)

    @property
    def gpus(self) -> int:
        """GPUs in all pools (a replica has its oracle's `gpus`)."""
        return sum(p.replicas * p.oracle.gpus for p in self.pools)

    @property
    def exact_steps(self) -> bool:
        """Whether the servers run the one-step-per-event reference mode."""
        return self.pools[0].server.exact_steps

    def pool(self, name: str | None) -> Pool:
        """The pool called `name` (None: the only pool)."""
        if name is None:
            if len(self.pools) != 1:
                raise ConfigError(f"the fleet has pools {[p.name for p in self.pools]}: name the one to size")
            return self.pools[0]
        for p in self.pools:
            if p.name == name:
                return p
        raise ConfigError(f"no pool named {name!r}; pools: {[p.name for p in self.pools]}")

    def resized(self, pool: str | None, replicas: int) -> Fleet:
        """The same fleet with pool `pool` (None: the only one) at `replicas` replicas."""
        target = self.pool(pool).name
        pools = tuple(replace(p, replicas=replicas) if p.name == target else p for p in self.pools)
        return replace(self, pools=pools)

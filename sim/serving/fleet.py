"""A fleet: pools of identical serving replicas (one model on one GPU kind each) behind a router.

`FleetConfig` is the validated `fleet:` section of the config: either `replicas` copies of the
top-level `oracle` and `server`, or explicit `pools`, each with its own oracle, replica count,
server overrides and (for the `length_aware` router) length bounds. `Fleet` is the loaded form
the simulator takes: oracles resolved, server configs built.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from oracle.model import Oracle
from sim.config import ConfigError, ServerConfig, SloConfig, build, check
from sim.serving.routing import ROUTERS

MAX_SERVERS = 30_000  # the job table stores a server index as int16


@dataclass(frozen=True)
class PoolConfig:
    """One pool as configured: oracle (null: the top-level one), replicas, server overrides.

    max_input_tokens / max_output_tokens bound the requests the `length_aware` router sends here
    (null: no bound); a request goes to the first pool, in listed order, that admits it.
    """

    name: str = "main"
    oracle: str | None = None
    replicas: int = 1
    server: dict[str, Any] = field(default_factory=dict)
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class FleetConfig:
    """The `fleet:` section: `replicas` of the top-level model, or explicit `pools`; the router."""

    replicas: int = 1
    router: str = "round_robin"
    pools: tuple[PoolConfig, ...] = ()
    slo_headroom: float = 0.8
    cache_balance: float = 1.0

    def __post_init__(self) -> None:
        check(self.router in ROUTERS, "fleet.router", f"must be one of {tuple(ROUTERS)}, got {self.router!r}")
        check(0 < self.slo_headroom <= 1, "fleet.slo_headroom", f"must be in (0, 1], got {self.slo_headroom}")
        check(self.cache_balance >= 0, "fleet.cache_balance", f"must be ≥ 0, got {self.cache_balance}")
        check(self.replicas >= 1, "fleet.replicas", f"must be ≥ 1, got {self.replicas}")
        check(
            not self.pools or self.replicas == 1,
            "fleet.replicas",
            f"sizes the single default pool; with fleet.pools set, give each pool its replicas (got {self.replicas})",
        )
        names = [p.name for p in self.pools]
        dup = sorted({n for n in names if names.count(n) > 1})
        check(not dup, "fleet.pools", f"need distinct names, {dup} repeats")
        total = sum(p.replicas for p in self.pools) if self.pools else self.replicas
        check(total <= MAX_SERVERS, "fleet", f"has {total} replicas; at most {MAX_SERVERS} are supported")
        for i, p in enumerate(self.pools):
            key = f"fleet.pools[{i}]"
            check(p.replicas >= 1, f"{key}.replicas", f"must be ≥ 1, got {p.replicas}")
            for bound in ("max_input_tokens", "max_output_tokens"):
                v = getattr(p, bound)
                check(v is None or v >= 1, f"{key}.{bound}", f"must be null or ≥ 1 (tokens), got {v}")
        if self.router == "length_aware":
            check(len(self.pools) >= 2, "fleet.router", "length_aware needs ≥ 2 fleet.pools with length bounds")
            last = self.pools[-1]
            check(
                last.max_input_tokens is None and last.max_output_tokens is None,
                f"fleet.pools[{len(self.pools) - 1}]",
                "(the last pool) must have no length bounds under length_aware, so that every request has a pool",
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> FleetConfig:
        """Validate the composed `fleet:` mapping; errors name the key."""
        values = dict(values or {})
        pools = values.pop("pools", None) or ()
        check(
            isinstance(pools, (list, tuple)),
            "fleet.pools",
            f"must be a list of pools, got {type(pools).__name__}",
        )
        parsed = []
        for i, p in enumerate(pools):
            check(isinstance(p, Mapping), f"fleet.pools[{i}]", f"must be a mapping, got {p!r}")
            parsed.append(build(PoolConfig, p, f"fleet.pools[{i}]"))
        return build(cls, {**values, "pools": tuple(parsed)}, "fleet")


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
        if self.router not in ROUTERS:
            raise ValueError(f"router must be one of {tuple(ROUTERS)}, got {self.router!r}")
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


def build_fleet(
    config: FleetConfig,
    oracle: Oracle,
    server: ServerConfig,
    slo: SloConfig,
    load_oracle: Callable[[str, str], Oracle],
) -> Fleet:
    """Resolve a FleetConfig: pools without an oracle use `oracle`; pool server keys override
    the top-level `server`. `load_oracle(name, key)` loads an oracle, naming the config key."""
    if not config.pools:
        return Fleet(
            (Pool("main", oracle, server, config.replicas),),
            config.router,
            slo,
            config.slo_headroom,
            config.cache_balance,
        )
    pools = []
    for i, p in enumerate(config.pools):
        key = f"fleet.pools[{i}]"
        pool_oracle = oracle if p.oracle is None else load_oracle(p.oracle, f"{key}.oracle")
        merged = {**asdict(server), **p.server}
        srv = build(ServerConfig, merged, f"{key}.server")
        pools.append(Pool(p.name, pool_oracle, srv, p.replicas, p.max_input_tokens, p.max_output_tokens))
    return Fleet(tuple(pools), config.router, slo, config.slo_headroom, config.cache_balance)

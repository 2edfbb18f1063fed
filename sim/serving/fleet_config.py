"""The `fleet:` section of the config, validated (`FleetConfig`, `PoolConfig`), and its loading
into a `Fleet` (`build_fleet`).

Either `replicas` copies of the top-level `oracle` and `server`, or explicit `pools`, each with its
own oracle, replica count, server overrides and (for the `length_aware` router) length bounds; the
router is a name of `sim.serving.routers.ROUTERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from oracle.model import Oracle
from sim.config import ServerConfig, SloConfig
from sim.schema import build, check
from sim.serving.fleet import MAX_SERVERS, Fleet, Pool
from sim.serving.routers import ROUTERS


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

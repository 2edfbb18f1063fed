"""The typed top-level config of `python -m sim` (`AppConfig`) and its validation (`app_config`).

Hydra composes conf/sim.yaml; `app_config` turns the composed tree (a plain mapping, interpolations
resolved) into `AppConfig`, each section through its own schema (`sim.config`, `traces`,
`sim.policies`, `sim.serving`, `sim.planning`, `tracking`), so unknown keys and bad values fail at
start-up naming the key; `objective` reads the configured metric(s) off a run's summary for Hydra's
sweeper. Kept apart from `sim.app`, which composes a run from the validated config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import traces
from sim.config import GpuConfig, ServerConfig, SloConfig
from sim.planning.capacity import CapacityConfig
from sim.planning.facility import PlanningConfig
from sim.planning.uncertainty import UncertaintyConfig
from sim.policies import policy_config
from sim.results.summary import Summary, unit
from sim.schema import ConfigError, build, check
from sim.serving.fleet_config import FleetConfig
from sim.serving.windows import ExecutionConfig
from tracking import TrackingConfig, TrackingError


@dataclass(frozen=True)
class AppConfig:
    """Everything one `python -m sim` run needs, validated (see conf/sim.yaml)."""

    oracle: str
    output_dir: str
    trace: traces.TraceConfig
    server: ServerConfig
    policy: str
    policy_params: dict[str, Any]
    slo: SloConfig = SloConfig()
    gpu: GpuConfig = GpuConfig()
    tracking: TrackingConfig = TrackingConfig()
    planning: PlanningConfig = PlanningConfig()
    fleet: FleetConfig = FleetConfig()
    capacity: CapacityConfig = CapacityConfig()
    seed: int = 0
    compare_baseline: bool = True
    progress: bool = True
    plots: bool = True
    background: bool = True
    objective: tuple[str, ...] = ("energy_savings_pct",)
    execution: ExecutionConfig = ExecutionConfig()
    uncertainty: UncertaintyConfig = UncertaintyConfig()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


TOP_KEYS = {
    "oracle", "output_dir", "trace", "server", "policy", "slo", "tracking", "seed",
    "compare_baseline", "progress", "plots", "background", "planning", "fleet", "capacity", "objective",
    "execution", "gpu", "uncertainty",
}  # fmt: skip
FLAGS = ("compare_baseline", "progress", "plots", "background")


def app_config(values: Mapping[str, Any]) -> AppConfig:
    """Validate a composed config (plain mapping, interpolations resolved)."""
    values = dict(values)
    unknown = sorted(set(values) - TOP_KEYS)
    check(not unknown, unknown[0] if unknown else "", f"is not a known key; known: {sorted(TOP_KEYS)}")
    policy = dict(values.get("policy") or {})
    name = policy.pop("name", None)
    check(isinstance(name, str), "policy.name", f"must name a policy, got {name!r}")
    policy_config(name, policy)
    try:
        trace = traces.TraceConfig.from_mapping(values.get("trace") or {})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"trace: {e}") from e
    check(isinstance(values.get("seed", 0), int) and not isinstance(values.get("seed", 0), bool), "seed",
          f"must be an int, got {values.get('seed')!r}")  # fmt: skip
    for key in FLAGS:
        check(isinstance(values.get(key, True), bool), key, f"must be true or false, got {values.get(key)!r}")
    try:
        tracking = build(TrackingConfig, values.get("tracking"), "tracking")
    except TrackingError as e:
        raise ConfigError(str(e)) from e
    execution = build(ExecutionConfig, values.get("execution"), "execution")
    whole = "must be 'single' for trace=closed_loop (its arrivals depend on completions)"
    check(
        trace.name != "closed_loop" or execution.mode == "single", "execution.mode", f"{whole}, got {execution.mode!r}"
    )
    return AppConfig(
        oracle=str(values.get("oracle")),
        output_dir=str(values.get("output_dir") or "."),
        trace=trace,
        server=build(ServerConfig, values.get("server"), "server"),
        policy=name,
        policy_params=policy,
        slo=build(SloConfig, values.get("slo"), "slo"),
        gpu=build(GpuConfig, values.get("gpu"), "gpu"),
        tracking=tracking,
        planning=build(PlanningConfig, values.get("planning"), "planning"),
        fleet=FleetConfig.from_mapping(values.get("fleet")),
        capacity=build(CapacityConfig, values.get("capacity"), "capacity"),
        seed=int(values.get("seed", 0)),
        compare_baseline=values.get("compare_baseline", True),
        progress=values.get("progress", True),
        plots=values.get("plots", True),
        background=values.get("background", True),
        objective=_objective(values.get("objective", "energy_savings_pct")),
        execution=execution,
        uncertainty=build(UncertaintyConfig, values.get("uncertainty"), "uncertainty"),
        raw=values,
    )


def _objective(value: Any) -> tuple[str, ...]:
    """One summary metric or a list of them (a multi-objective study); each must exist."""
    keys = [value] if isinstance(value, str) else value
    check(isinstance(keys, list) and bool(keys) and all(isinstance(k, str) for k in keys), "objective",
          f"must be a summary metric or a list of them, got {value!r}")  # fmt: skip
    for key in keys:
        try:
            unit(key)
        except KeyError as e:
            raise ConfigError(f"objective: {e.args[0]}") from e
    return tuple(keys)


def objective(summary: Summary, keys: tuple[str, ...]) -> float | tuple[float, ...]:
    """What a Hydra sweeper optimises: the configured summary metric(s) (NaN when undefined)."""
    values = tuple(summary.value(k) for k in keys)
    return values[0] if len(values) == 1 else values

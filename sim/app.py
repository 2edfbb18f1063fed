"""The composition root: typed config → oracle, trace, policies → paired runs → files, MLflow.

`app_config` validates the composed Hydra tree (as a plain mapping) into `AppConfig`; `prepare`
loads and builds everything that can fail on bad input (so errors come before any simulation);
`execute` runs the policy and the baseline, writes summary.json, per-request Parquet files,
plots and the resolved config to `output_dir`, logs them to MLflow and returns the summary.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

import traces
from oracle.model import Oracle, OracleFormatError
from sim.capacity import Capacity, CapacityConfig, search_capacity
from sim.config import ConfigError, ServerConfig, SloConfig, build, check
from sim.console import table
from sim.costs import kv_capacity_tokens
from sim.fleet import Fleet, FleetConfig, build_fleet
from sim.metrics import fleet_summary, summarize, with_baseline
from sim.planning import PlanningConfig, planning_figures
from sim.plots import plot_capacity, plot_energy, plot_power
from sim.policies import PolicyContext, build_policy, policy_config
from sim.policies.base import Policy
from sim.run import SimResult, simulate_fleet
from sim.tracking import TrackingConfig, log_run

log = logging.getLogger(__name__)


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
    tracking: TrackingConfig = TrackingConfig()
    planning: PlanningConfig = PlanningConfig()
    fleet: FleetConfig = FleetConfig()
    capacity: CapacityConfig = CapacityConfig()
    seed: int = 0
    compare_baseline: bool = True
    progress: bool = True
    plots: bool = True
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class Prepared:
    """Loaded inputs of a run."""

    config: AppConfig
    oracle: Oracle
    requests: pd.DataFrame
    policy: Policy
    fleet: Fleet


TOP_KEYS = {
    "oracle", "output_dir", "trace", "server", "policy", "slo", "tracking", "seed",
    "compare_baseline", "progress", "plots", "planning", "fleet", "capacity",
}  # fmt: skip


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
    for key in ("seed",):
        check(isinstance(values.get(key, 0), int), key, f"must be an int, got {values.get(key)!r}")
    return AppConfig(
        oracle=str(values.get("oracle")),
        output_dir=str(values.get("output_dir") or "."),
        trace=trace,
        server=build(ServerConfig, values.get("server"), "server"),
        policy=name,
        policy_params=policy,
        slo=build(SloConfig, values.get("slo"), "slo"),
        tracking=build(TrackingConfig, values.get("tracking"), "tracking"),
        planning=build(PlanningConfig, values.get("planning"), "planning"),
        fleet=FleetConfig.from_mapping(values.get("fleet")),
        capacity=build(CapacityConfig, values.get("capacity"), "capacity"),
        seed=int(values.get("seed", 0)),
        compare_baseline=bool(values.get("compare_baseline", True)),
        progress=bool(values.get("progress", True)),
        plots=bool(values.get("plots", True)),
        raw=values,
    )


def with_planning(summary: dict[str, Any], result: SimResult, horizon_s: float, cfg: PlanningConfig) -> dict[str, Any]:
    """Add the annualised planning figures (energy, facility power, CO2e, cost) of a run's servers."""
    busy = sum(s.busy_s for s in result.servers)
    figures = planning_figures(summary["energy_j"], horizon_s, summary["peak_power_w"], len(result.servers), busy, cfg)
    return {**summary, **figures.to_dict()}


def load_oracle(name_or_path: str, key: str = "oracle") -> Oracle:
    """An oracle by shipped name or path; errors name the config key."""
    try:
        return Oracle.load(name_or_path)
    except (FileNotFoundError, OracleFormatError) as e:
        raise ConfigError(f"{key}: {e}") from e


def prepare(config: AppConfig) -> Prepared:
    """Load the oracles and the trace, build the fleet and the policy (start-up errors happen here)."""
    oracle = load_oracle(config.oracle)
    fleet = build_fleet(config.fleet, oracle, config.server, config.slo, load_oracle)
    for i, pool in enumerate(fleet.pools):
        try:
            kv_capacity_tokens(pool.oracle, pool.server.kv_capacity_tokens, pool.server.kv_memory_fraction)
        except ConfigError as e:
            raise ConfigError(f"fleet.pools[{i}] ({pool.name}): {e}" if config.fleet.pools else str(e)) from e
    if config.capacity.enabled:
        fleet.pool(config.capacity.pool)  # an unknown or missing pool name fails before any run
    requests = traces.load_config(config.trace)
    context = PolicyContext(oracle, requests["n_in"].to_numpy(), requests["n_out"].to_numpy())
    policy = build_policy(config.policy, config.policy_params, context)
    return Prepared(config, oracle, requests, policy, fleet)


def execute(prepared: Prepared) -> dict[str, Any]:
    """Simulate the policy (and the baseline), write and track the results; the summary."""
    cfg = prepared.config
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log.info(
        "simulating %s on %d requests with %s", prepared.policy.describe(), len(prepared.requests), prepared.oracle.name
    )
    fleet, capacity, result = prepared.fleet, None, None
    if cfg.capacity.enabled:
        capacity, result = search_capacity(
            prepared.requests, fleet, prepared.policy, cfg.capacity, progress=cfg.progress
        )
        fleet = fleet.resized(capacity.pool, capacity.replicas)
        log.info("capacity: %d replicas of pool %r (%d GPUs), target met: %s", capacity.replicas,
                 capacity.pool, capacity.gpus, capacity.met)  # fmt: skip
    if result is None:
        result = _simulate(prepared, fleet, prepared.policy)
    runs = [result]
    if cfg.compare_baseline and prepared.policy.name != "none":
        runs.append(_simulate(prepared, fleet, Policy()))
    baseline = runs[-1]
    horizon = max(r.makespan_s for r in runs)
    summary = with_planning(summarize(result, cfg.slo, horizon), result, horizon, cfg.planning)
    summary["fleet"] = fleet_summary(result, fleet, horizon)
    if capacity is not None:
        summary["capacity"] = _capacity(prepared, capacity)
    if cfg.compare_baseline:
        summary = with_baseline(summary, summarize(baseline, cfg.slo, horizon))
    artifacts = _write(out, cfg, summary, runs, horizon)
    params = {**cfg.raw, "policy_description": prepared.policy.describe()}
    tracking = cfg.tracking
    if tracking.run_name is None:
        tracking = replace(tracking, run_name=f"{result.policy}-{cfg.trace.name}")
    run_id = log_run(tracking, params, summary, artifacts)
    if run_id:
        log.info("MLflow run %s (%s, experiment %r)", run_id, tracking.uri, tracking.experiment)
    print(table(summary))
    print(f"results in {out}")
    return summary


def _simulate(prepared: Prepared, fleet: Fleet, policy: Policy) -> SimResult:
    return simulate_fleet(prepared.requests, fleet, policy, progress=prepared.config.progress)


def _capacity(prepared: Prepared, capacity: Capacity) -> dict[str, Any]:
    """The search's answer; with a baseline, also the size the unshaped trace would need."""
    out = capacity.to_dict()
    cfg = prepared.config
    if cfg.compare_baseline and prepared.policy.name != "none":
        base, _ = search_capacity(prepared.requests, prepared.fleet, Policy(), cfg.capacity, progress=cfg.progress)
        out["baseline_replicas"] = base.replicas
        out["baseline_gpus"] = base.gpus
        out["baseline_met"] = base.met
        out["baseline_energy_j"] = base.energy_j
        out["gpus_saved"] = base.gpus - capacity.gpus
    return out


def _write(out: Path, cfg: AppConfig, summary: dict[str, Any], runs: list[SimResult], horizon: float) -> list[Path]:
    paths = [out / "summary.json", out / "resolved_config.yaml"]
    paths[0].write_text(json.dumps(_finite(summary), indent=2) + "\n")
    paths[1].write_text(yaml.safe_dump(cfg.raw, sort_keys=False))
    for run, name in zip(runs, ("requests.parquet", "requests_baseline.parquet"), strict=False):
        run.requests.to_parquet(out / name, index=False)
        paths.append(out / name)
    if cfg.plots:
        paths.append(plot_power(runs, out / "power.png", horizon))
        paths.append(plot_energy(runs, out / "energy_per_request.png"))
        if "capacity" in summary:
            paths.append(plot_capacity(summary["capacity"], cfg.slo, out / "capacity.png"))
    return paths


def _finite(value: Any) -> Any:
    """JSON-safe copy: NaN and inf become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

"""The composition root: typed config → oracle, trace, policies → paired runs → files, MLflow.

`sim.run_config.app_config` validates the composed Hydra tree into `AppConfig`; `prepare` loads
and builds everything that can fail on bad input (so errors come before any simulation; the
oracles through `sim.oracles`); `execute` claims `output_dir`, runs the policy and the baseline
(once per sweep), writes summary.json, per-request Parquet files, plots, the resolved config and
run.json, prints the table (and saves it, table.txt; a sweep's job prints one line and its
sweep's end the combined table), then logs the folder to MLflow and returns the typed summary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

import traces
from oracle.errors import HeldOutErrors
from oracle.model import Oracle
from sim.console.table import brief, clock_line, explain, table
from sim.engine.kv_sizing import replica_kv
from sim.identity import run_tags, trace_dataset, unused_params
from sim.oracles import clocked_oracle
from sim.planning.band_replays import replay_bands, replay_figures
from sim.planning.capacity import Capacity, search_capacity
from sim.planning.facility import planning_figures
from sim.planning.uncertainty import BANDS_FILE, bands, calibration_errors, fewest_models
from sim.plots.compare import TIMELINES_FILE, plot_folder
from sim.policies import PolicyContext, build_policy
from sim.policies.base import Policy
from sim.results.metrics import fleet_summary, run_summary, with_savings
from sim.results.output import RECORDS_FILES, check_output, claim_output, write_outputs
from sim.results.summary import SAME_RUN, Summary, split_wall_clock
from sim.run_config import AppConfig
from sim.schema import ConfigError
from sim.serving.baseline import baseline_key, cached_baseline
from sim.serving.fleet import Fleet
from sim.serving.fleet_config import build_fleet
from sim.serving.run import SimResult, simulate_fleet
from tracking.background import BackgroundTracking
from tracking.folder import RunRecord, log_folder, now_ms
from tracking.sweep import SweepInfo, run_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunContext:
    """Where a run sits: its command-line overrides and, in a multirun, the sweep folder and info."""

    overrides: tuple[str, ...] = ()
    sweep_dir: Path | None = None
    sweep: SweepInfo | None = None
    cores: int | None = None  # CPU cores for this job where its sweep runs jobs side by side here; None: all


@dataclass(frozen=True)
class Prepared:
    """Loaded inputs of a run."""

    config: AppConfig
    oracle: Oracle
    requests: pd.DataFrame
    policy: Policy
    fleet: Fleet
    errors: dict[str, HeldOutErrors] = field(default_factory=dict)  # the bands' calibrations, by label


def prepare(config: AppConfig) -> Prepared:
    """Check the output folder, load the oracles (at the configured clock) and the trace, build the
    fleet and the policy (every start-up error happens here, before any simulation)."""
    check_output(Path(config.output_dir))
    tpot_s = config.slo.tpot_s
    oracle = clocked_oracle(config.oracle, config.gpu, tpot_s=tpot_s)
    fleet = build_fleet(
        config.fleet, oracle, config.server, config.slo, lambda name, key: clocked_oracle(name, config.gpu, key, tpot_s)
    )
    for i, pool in enumerate(fleet.pools):
        try:
            replica_kv(pool.oracle, pool.server)
        except ConfigError as e:
            raise ConfigError(f"fleet.pools[{i}] ({pool.name}): {e}" if config.fleet.pools else str(e)) from e
    if config.capacity.enabled:
        fleet.pool(config.capacity.pool)  # an unknown or missing pool name fails before any run
    errors: dict[str, HeldOutErrors] = {}
    if config.uncertainty.enabled and config.uncertainty.calibration:
        errors = calibration_errors(fleet)  # an oracle no calibration covers fails before any run
    thin = config.uncertainty.thin_tails(fewest_models(errors))
    if thin:
        log.warning(thin)
    try:
        requests = traces.load_config(config.trace)
    except ConfigError:
        raise
    except (ValueError, TypeError, OSError) as e:  # the loaders' messages name file, column and row
        raise ConfigError(f"trace {config.trace.name!r}: {e}") from e
    context = PolicyContext(oracle, requests["n_in"].to_numpy(), requests["n_out"].to_numpy())
    policy = build_policy(config.policy, config.policy_params, context)
    return Prepared(config, oracle, requests, policy, fleet, errors)


def execute(
    prepared: Prepared, context: RunContext | None = None, tracking: BackgroundTracking | None = None
) -> Summary:
    """Simulate the policy (and the baseline), write the data, print the table, then draw the plots
    and track the results; the summary.

    With a tracking helper (`tracking`) and `background`, the helper draws the plots and logs the
    run after this returns (the command ends once the table and the data are written); else the
    plots are drawn here and the run is logged through the helper, or in this process without one.
    """
    cfg, context = prepared.config, context or RunContext()
    out = Path(cfg.output_dir)
    claim_output(out)
    started = now_ms()
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
        result = _simulate(prepared, fleet, prepared.policy, out / RECORDS_FILES[0])
    runs, source = [result], ""
    if cfg.compare_baseline and prepared.policy.name != "none":
        key = baseline_key(cfg.raw, tuple(p.replicas for p in fleet.pools))
        path = out / RECORDS_FILES[1]
        base, source = cached_baseline(context.sweep_dir, key, lambda: _simulate(prepared, fleet, Policy(), path))
        runs.append(base)
        log.info("baseline %s (key %s)", source, key)
    summary = _summary(prepared, fleet, capacity, runs, source)
    samples = None
    if cfg.uncertainty.enabled:
        samples = replay_bands(
            prepared.requests,
            fleet,
            cfg.uncertainty
            if cfg.uncertainty.threads or not context.cores
            else replace(cfg.uncertainty, threads=context.cores),
            cfg.seed,
            replay_figures(prepared.policy, cfg.slo, cfg.capacity, capacity, cfg.compare_baseline),
            progress=cfg.progress,
            errors=prepared.errors,
        )
        summary = replace(summary, bands=bands(samples, cfg.uncertainty, prepared.errors))
    clocked = cfg.gpu.clock_mhz is not None or cfg.gpu.power_limit_w is not None or cfg.gpu.clock_policy != "static"
    lines = [
        table(summary),
        clock_line(summary) if clocked else None,
        explain(prepared.policy, prepared.requests, summary),
    ]
    text = "\n".join(filter(None, lines)) + "\n"
    names = write_outputs(out, cfg.raw, summary, runs, text)
    if samples is not None:
        samples.to_csv(out / BANDS_FILE, index=False, float_format="%.10g")
        names.append(BANDS_FILE)
    ended = now_ms()
    sweep = context.sweep
    name = cfg.tracking.run_name or run_name(result.policy, context.overrides, sweep.swept if sweep else None)
    if context.sweep_dir is None:
        print(text, end="", flush=True)  # the figures first: plots and tracking take longer than the simulation
    else:  # one line a job: the sweep's jobs share the console, and its end prints the combined table
        print(f"{name}: {brief(summary)}; results in {out}", flush=True)
    background = tracking is not None and cfg.background
    if tracking is not None and not background:
        tracking.open()  # if not yet: MLflow loads while the plots are drawn
    if cfg.plots and not background:
        names += plot_folder(out)
    record = RunRecord(
        tracking=cfg.tracking,
        run_name=name,
        tags=run_tags(context.overrides, sweep.sweep_id if sweep else None, source),
        parent_run_id=sweep.parent_run_id if sweep else None,
        datasets=(trace_dataset(cfg.trace.name, cfg.trace.path, prepared.requests),),
        extra_params={"policy_description": prepared.policy.describe()},
        artifacts=(*names, "run.json"),
        timing=split_wall_clock(summary.to_dict())[1],
        start_ms=started,
        end_ms=ended,
        unused_params=unused_params(cfg.trace, cfg.capacity, cfg.execution, cfg.uncertainty),
        series=TIMELINES_FILE,
    )
    record.write(out)
    if background:
        assert tracking is not None
        tracking.finish(out, plots=cfg.plots)
        what = "the plots and the MLflow run follow" if cfg.plots else "the MLflow run follows"
        print(f"results in {out}; {what} from a background process (background=false waits)", flush=True)
        return summary
    if context.sweep_dir is None:
        print(f"results in {out}", flush=True)
    if cfg.tracking.enabled:
        run_id = tracking.log(out) if tracking is not None else log_folder(out, record)
        if run_id:
            log.info(
                "MLflow run %s %r (%s, experiment %r)", run_id, name, cfg.tracking.shown_uri, cfg.tracking.experiment
            )
    return summary


def _summary(
    prepared: Prepared, fleet: Fleet, capacity: Capacity | None, runs: list[SimResult], source: str
) -> Summary:
    """The typed summary of the policy's run against the baseline (the last of `runs`)."""
    cfg, result = prepared.config, runs[0]
    horizon = max(r.makespan_s for r in runs)
    own = run_summary(result, cfg.slo, horizon)
    per_replica = {p.name: p.oracle.gpus for p in fleet.pools}  # (a summarizer's own server: one GPU)
    gpus = [per_replica.get(s.pool, 1) for s in result.servers]
    busy = sum(s.busy_s * g for s, g in zip(result.servers, gpus, strict=True))  # GPU-seconds
    figures = planning_figures(own.energy_j, horizon, own.peak_power_w, sum(gpus), busy, cfg.planning)
    base = run_summary(runs[-1], cfg.slo, horizon) if cfg.compare_baseline else None
    summary = Summary(
        run=own,
        planning=figures.to_dict(),
        fleet=fleet_summary(result, fleet, horizon),
        baseline=base,
        baseline_source=source or (SAME_RUN if base is not None else ""),
        capacity=_capacity(prepared, capacity) if capacity is not None else None,
        arrivals_note=_arrivals_note(cfg.trace) if base is not None and source else "",  # not of a run against itself
    )
    return summary if base is None else with_savings(summary, result, runs[-1])


def _arrivals_note(trace: traces.TraceConfig) -> str:
    """For a closed loop, that the policy and the baseline were compared at equal concurrency, not
    on the same arrivals (their clients send on their own completions); "" otherwise."""
    if trace.name != "closed_loop":
        return ""
    return (
        f"closed loop of {trace.concurrency} client{'s' if trace.concurrency > 1 else ''}: the baseline's clients "
        "send on its own completions, so the two runs have their own arrivals (compared at equal concurrency)"
    )


def _simulate(prepared: Prepared, fleet: Fleet, policy: Policy, records: Path) -> SimResult:
    """One run; in one process it is streamed: its records go to `records` as it ends."""
    cfg = prepared.config
    if cfg.execution.mode == "single":
        features = any(p.server.record_features for p in fleet.pools)
        path = None if features else records  # the feature log needs whole spans: kept in memory
        return simulate_fleet(prepared.requests, fleet, policy, progress=cfg.progress, records_path=path)
    return cfg.execution.simulate(prepared.requests, fleet, policy)


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

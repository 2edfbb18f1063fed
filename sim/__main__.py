"""`python -m sim [overrides]` (or `sweetspot-sim`): simulate a policy against the baseline.

See conf/sim.yaml. Returns the configured `objective` (summary metric(s)) to Hydra, so search
sweepers (hydra/sweeper=optuna) can tune a policy's thresholds. A single run tracks through a
helper process started before anything else loads (tracking.background); the simulator's own
modules are imported after it has started.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from calibrate.signals import Terminated, sigterm_raises
from sim.console.notices import count_repeats, show_warnings_once
from tracking.background import BackgroundTracking
from tracking.files import WriteError
from tracking.folder import FAILED, INTERRUPTED
from tracking.store import TrackingConfig, TrackingError
from tracking.sweep import SweepInfo

if TYPE_CHECKING:
    from sim.app import RunContext


def run_context() -> RunContext:
    """This job's overrides and, in a multirun, its sweep (read from Hydra's runtime config)."""
    from sim.app import RunContext

    hc = HydraConfig.get()
    overrides = tuple(hc.overrides.task)
    if hc.mode != RunMode.MULTIRUN:
        return RunContext(overrides)
    sweep_dir = Path(str(hc.sweep.dir))
    return RunContext(overrides, sweep_dir, SweepInfo.read(sweep_dir), job_cores(hc.launcher))


def job_cores(launcher: DictConfig) -> int | None:
    """CPU cores one job of a sweep may use when the launcher runs jobs side by side on this
    machine: this machine's cores over joblib's `n_jobs` (-1: one job per core), or a Ray task's
    `num_cpus`; None for launchers that run one job at a time or give each its own cores (SLURM
    jobs see theirs through the CPU affinity)."""
    from sim.planning.uncertainty import available_cores

    target = str(launcher.get("_target_", ""))
    if "hydra_joblib_launcher" in target:
        n_jobs = int(launcher.get("n_jobs") or -1)
        return 1 if n_jobs < 1 else max(1, available_cores() // n_jobs)
    if "hydra_ray_launcher" in target:
        cpus = OmegaConf.select(launcher, "ray.remote.num_cpus")
        return max(1, int(cpus)) if cpus else None
    return None


def background_tracking(cfg: DictConfig) -> BackgroundTracking | None:
    """A tracking helper for a single run with tracking on; None in a multirun (its jobs run in
    parallel already), when MLflow is already imported here, or for an invalid tracking config
    (the validation reports it)."""
    if HydraConfig.get().mode == RunMode.MULTIRUN or "mlflow" in sys.modules:
        return None
    try:
        values = OmegaConf.to_container(cfg.get("tracking") or {}, resolve=True)
        return BackgroundTracking.start(TrackingConfig(**values))  # type: ignore[arg-type]
    except (TypeError, ValueError, TrackingError, OmegaConfBaseException):
        return None


@hydra.main(config_path="pkg://conf", config_name="sim", version_base="1.3")
def main(cfg: DictConfig) -> float | tuple[float, ...]:
    """Validate the composed config, then run; bad input (or a full disk) exits 1 with one line
    naming the key or file; SIGINT and SIGTERM exit 130 and 143 with one line saying what was kept."""
    show_warnings_once()
    tracking = None
    with sigterm_raises():
        try:
            tracking = background_tracking(cfg)
            return run(cfg, tracking)
        except (KeyboardInterrupt, Terminated) as e:
            name, status = ("SIGINT", 130) if isinstance(e, KeyboardInterrupt) else ("SIGTERM", 143)
            print(f"sweetspot-sim: interrupted ({name}); {stopped(cfg, INTERRUPTED, name)}", file=sys.stderr)
            raise SystemExit(status) from None
        finally:
            if tracking is not None:
                tracking.close()
            count_repeats()


def stopped(cfg: DictConfig, status: str, reason: str) -> str:
    """Mark the run's folder `status` if this run claimed it (sim.results.output.stopped); what was kept."""
    folder = Path(str(cfg.get("output_dir") or "."))
    if "sim.results.output" not in sys.modules:  # stopped before the simulator loaded: nothing claimed
        return f"nothing was written to {folder}"
    from sim.results.output import stopped as mark

    return mark(folder, status, reason)


def run(cfg: DictConfig, tracking: BackgroundTracking | None) -> float | tuple[float, ...]:
    """Validate, load, simulate, write and track; the objective."""
    from sim.app import execute, prepare
    from sim.run_config import app_config, objective
    from sim.schema import ConfigError

    context = run_context()
    try:
        config = app_config(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
        prepared = prepare(config)
        if tracking is not None:
            tracking.open(only_if_idle=True)  # else once the table is printed
        summary = execute(prepared, context, tracking)
    except (ConfigError, WriteError) as e:
        message = f"error: {e}" if isinstance(e, ConfigError) else f"error: {e}; {stopped(cfg, FAILED, str(e))}"
        if context.sweep_dir is not None:  # fail this job only: the sweep's other jobs still run, then it exits 1
            raise
        sys.exit(message)
    return objective(summary, config.objective)


if __name__ == "__main__":
    main()

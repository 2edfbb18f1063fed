"""`python -m sim [overrides]` (or `sweetspot-sim`): simulate a policy against the baseline.

See conf/sim.yaml. Returns the configured `objective` (summary metric(s)) to Hydra, so search
sweepers (hydra/sweeper=optuna) can tune a policy's thresholds.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sim.app import RunContext, app_config, execute, objective, prepare
from sim.config import ConfigError
from tracking.sweep import SweepInfo


def run_context() -> RunContext:
    """This job's overrides and, in a multirun, its sweep (read from Hydra's runtime config)."""
    hc = HydraConfig.get()
    overrides = tuple(hc.overrides.task)
    if hc.mode != RunMode.MULTIRUN:
        return RunContext(overrides)
    sweep_dir = Path(str(hc.sweep.dir))
    return RunContext(overrides, sweep_dir, SweepInfo.read(sweep_dir))


@hydra.main(config_path="pkg://conf", config_name="sim", version_base="1.3")
def main(cfg: DictConfig) -> float | tuple[float, ...]:
    """Validate the composed config, then run; bad input exits 1 with one line naming the key or file."""
    context = run_context()
    try:
        config = app_config(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
        summary = execute(prepare(config), context)
    except ConfigError as e:
        if context.sweep_dir is not None:  # fail this job only: the sweep's other jobs still run, then it exits 1
            raise
        sys.exit(f"error: {e}")
    return objective(summary, config.objective)


if __name__ == "__main__":
    main()

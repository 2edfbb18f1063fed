"""Progress bars only where someone watches them: on an interactive terminal, never in a sweep's job.

Every bar of the project is made by `progress_bar`. It draws (on stderr) only when the caller wants
it, stderr is a terminal (tqdm's `disable=None`), and this process is not one job of a parallel
sweep: a job of a Hydra multirun (the basic, joblib, Ray or SLURM launcher: Hydra's mode is
MULTIRUN there) or a Ray task (simulate_windows' windows). The jobs of a sweep share one terminal,
so their bars would overwrite each other and the tables between them.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar (tqdm's keyword arguments) that draws only if `enabled`, on a terminal, outside
    a sweep's jobs; otherwise a disabled bar (its updates cost nothing)."""
    return tqdm(disable=None if enabled and not in_parallel_job() else True, **kwargs)


def in_parallel_job() -> bool:
    """Whether this process runs one job of a sweep (a Hydra multirun's job, or a Ray task)."""
    return _hydra_multirun() or _ray_task()


def _hydra_multirun() -> bool:
    if "hydra" not in sys.modules:  # never imported: not a Hydra job
        return False
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _ray_task() -> bool:
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return False
    try:
        return bool(ray.get_runtime_context().worker.mode == ray.WORKER_MODE)
    except AttributeError:  # a Ray without that attribute: its workers' stderr is a log file anyway
        return False

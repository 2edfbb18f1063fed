"""The baseline of a sweep, simulated once: every job of a multirun that shares (trace, fleet,
server, oracle, seed, GPU clock) reuses one cached unshaped run, stored in the sweep folder under a hash of
those settings. Parallel jobs wait on a file lock while the first one simulates it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sim.serving.run import SimResult

CACHE_DIR = "baselines"
KEYS = ("oracle", "trace", "server", "fleet", "seed", "slo", "gpu")


def baseline_key(raw: Mapping[str, Any], replicas: tuple[int, ...]) -> str:
    """Hash of the settings that fix the baseline (and of the fleet's final size)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("sweetspot-sim")
    except PackageNotFoundError:
        ver = "source"
    text = json.dumps(
        {**{k: raw.get(k) for k in KEYS}, "replicas": replicas, "version": ver}, sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_baseline(sweep_dir: Path | None, key: str, simulate: Callable[[], SimResult]) -> tuple[SimResult, str]:
    """(the baseline, 'cached' or 'simulated'); without a sweep folder, always simulated."""
    if sweep_dir is None:
        return simulate(), "simulated"
    from filelock import FileLock

    folder = sweep_dir / CACHE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.pkl"
    with FileLock(f"{path}.lock"):
        if path.exists():
            with path.open("rb") as f:
                return pickle.load(f), "cached"
        result = simulate()
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(result, f)
        tmp.replace(path)
        return result, "simulated"

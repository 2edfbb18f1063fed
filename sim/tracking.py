"""MLflow tracking in one place: the simulator, calibration sweeps and the oracle run without it.

Every run records flattened parameters, numeric metrics and artifact files. A tracking failure
(unreachable server, locked database) never loses results: they are already on disk, and the
failure is reported as a warning that says what went wrong and how to fix it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
ATTEMPTS = 3
RETRY_WAIT_S = 1.0


@dataclass(frozen=True)
class TrackingConfig:
    """Where and whether to track. `uri` is an MLflow tracking URI (file, sqlite or http)."""

    enabled: bool = True
    uri: str = DEFAULT_URI
    experiment: str = "sweetspot-sim"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every non-mapping leaf of a nested mapping."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, prefix=f"{name}.")
        else:
            yield name, value


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to dotted keys with string values (MLflow params are strings)."""
    return {name: str(value) for name, value in _leaves(params, prefix)}


def numeric_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of a nested summary, as dotted metric names."""
    metrics: dict[str, float] = {}
    for name, value in _leaves(summary, prefix):
        if isinstance(value, bool):
            metrics[name] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(float(value)):
            metrics[name] = float(value)
    return metrics


def log_run(
    config: TrackingConfig,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifacts: Iterable[Path] = (),
) -> str | None:
    """Log one MLflow run; return its run id, or None (with a warning) if tracking failed."""
    if not config.enabled:
        return None
    artifacts = list(artifacts)
    error: Exception | None = None
    for attempt in range(ATTEMPTS):
        try:
            return _log(config, params, metrics, artifacts)
        except Exception as e:  # noqa: BLE001 - any tracking failure must not lose results
            error = e
            if attempt + 1 < ATTEMPTS:  # parallel jobs racing to create a new SQLite store: retry
                time.sleep(RETRY_WAIT_S * (attempt + 1))
    log.warning(
        "MLflow tracking to %r failed after %d attempts (%s: %s); results are still on disk. "
        "Check tracking.uri, or run with tracking.enabled=false.",
        config.uri,
        ATTEMPTS,
        type(error).__name__,
        error,
    )
    return None


def _log(
    config: TrackingConfig,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifacts: Iterable[Path],
) -> str:
    import mlflow

    mlflow.set_tracking_uri(config.uri)
    mlflow.set_experiment(config.experiment)
    flat = flatten(params)
    with mlflow.start_run(run_name=config.run_name, tags=dict(config.tags)) as run:
        keys = list(flat)
        for i in range(0, len(keys), 100):  # MLflow caps a batch at 100 params
            mlflow.log_params({k: flat[k][:6000] for k in keys[i : i + 100]})
        mlflow.log_metrics(numeric_metrics(metrics))
        for path in artifacts:
            if Path(path).is_dir():
                mlflow.log_artifacts(str(path))
            elif Path(path).exists():
                mlflow.log_artifact(str(path))
        return run.info.run_id

"""The MLflow store, safe under parallel writers.

A local SQLite store is created (and migrated) by whichever process opens it first; two processes
doing that at once corrupt it (`_alembic_tmp_* already exists`). So every access to a SQLite store
goes through `store_lock`, a file lock beside the database, and `ensure_experiment` creates the
store and the experiment once, before a sweep's jobs start (see tracking.callback).
HTTP stores get bounded requests instead: `http_limits` sets MLflow's retry and timeout settings
from the config, so an unreachable server costs about `timeout_s` seconds, not minutes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracking.safe_text import redact, shell_command

DEFAULT_URI = "sqlite:///mlflow.db"
KIND_TAG = "mlflow.experimentKind"
KIND = "custom_model_development"
"""MLflow 3's kind of an experiment of classic model development: its UI opens on the runs, not
on the empty GenAI (traces) pages it shows an experiment without a kind."""


class TrackingError(RuntimeError):
    """A tracking store that cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class TrackingConfig:
    """Where and whether to track.

    uri: an MLflow tracking URI (sqlite:///file.db, file:, http://host:port). timeout_s: the most an
    HTTP request to the server may take (s), with no retries. lock_timeout_s: the longest wait (s)
    for another process writing the same SQLite store. run_name: null for a name from the
    overrides.
    """

    enabled: bool = True
    uri: str = DEFAULT_URI
    experiment: str = "sweetspot-sim"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 5.0
    lock_timeout_s: float = 120.0

    def __post_init__(self) -> None:
        for key in ("timeout_s", "lock_timeout_s"):
            value = getattr(self, key)
            if not value > 0:
                raise TrackingError(f"tracking.{key} must be > 0 (s), got {value!r}")

    @property
    def shown_uri(self) -> str:
        """The URI as messages and files show it: without its credentials."""
        return redact(self.uri)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (None for other stores)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def http_limits(config: TrackingConfig) -> None:
    """Bound MLflow's HTTP requests by the config: no retries, each at most timeout_s seconds."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(config.timeout_s)))


@contextmanager
def store_lock(config: TrackingConfig) -> Iterator[None]:
    """Hold the store's file lock (SQLite stores only; a no-op for servers)."""
    path = sqlite_path(config.uri)
    if path is None:
        yield
        return
    from filelock import FileLock, Timeout

    load_store_modules()  # ~1 s of imports, done before taking the lock so other writers wait less
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock")
    try:
        lock.acquire(timeout=config.lock_timeout_s)
    except Timeout as e:
        raise TrackingError(
            f"{path} stayed locked by another process for {config.lock_timeout_s:g} s "
            f"(raise tracking.lock_timeout_s, or delete {path}.lock if no run is writing)"
        ) from e
    try:
        yield
    finally:
        lock.release()


def load_store_modules() -> None:
    """Import MLflow's SQLite store and Alembic (about 1 to 3 s: the bulk of tracking a run)."""
    import alembic.migration  # noqa: F401
    import mlflow.store.db.utils  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401


def check_store(config: TrackingConfig) -> None:
    """Raise TrackingError with the fix if a SQLite store was left half-migrated by an older version."""
    path = sqlite_path(config.uri)
    if path is None or not path.exists():
        return
    with sqlite3.connect(path) as db:
        names = [
            r[0]
            for r in db.execute("SELECT name FROM sqlite_master WHERE name LIKE '\\_alembic\\_tmp\\_%' ESCAPE '\\'")
        ]
    if names:
        drops = "; ".join(f"DROP TABLE {n}" for n in names)
        upgrade = shell_command("python", "-m", "mlflow", "db", "upgrade", config.uri)
        fix = f"{shell_command('sqlite3', path, drops)} && {upgrade}"
        raise TrackingError(
            f"{path} was left half-migrated by parallel runs of an older version (leftover tables {', '.join(names)}); "
            f"fix: {fix} (or move {path} aside to start afresh)"
        )


def ensure_experiment(config: TrackingConfig) -> str:
    """Create the store (if new) and the experiment (if missing) under the store lock; its id."""
    from mlflow import MlflowClient

    http_limits(config)
    with store_lock(config):
        check_store(config)
        return experiment_id(MlflowClient(config.uri), config.experiment)


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment `name` (created if missing), its kind set (`KIND`) unless it has one."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return str(client.create_experiment(name, tags={KIND_TAG: KIND}))
    if KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)
    return str(experiment.experiment_id)

"""A run's output folder as the unit of tracking: `run.json` says how to log it, so a run whose
tracking failed (server down) can be logged later from its folder alone:

    python -m tracking outputs/2026-01-01/12-00-00.123456 [--uri sqlite:///mlflow.db]

run.json holds the tracking config, run name, tags, parent run, input data sets, extra parameters,
the artifact files (names inside the folder: a run logs only its own files, stored once:
tracking.artifacts), what was measured on the wall clock (`timing`: seconds and requests/s of the
simulation, which differ between runs of one seed; `start_ms`, `end_ms`: when the run started and
ended, the MLflow run's start and end), the config keys the run did not read (`unused_params`,
left out of its params) and the file of its time series (`series`, logged as step metrics:
tracking.series); parameters come from resolved_config.yaml and the other metrics from
summary.json. Once logged, the folder's tracking.json holds the run id (a folder already logged is
skipped unless `--again`); a background finisher that could not log it writes the error there
instead. The folder's files hold the tracking URI without its credentials (tracking.safe_text):
logging a folder later connects with the credentials MLflow finds in MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, or with --uri. Logging holds the folder's claim (tracking.claim): one
folder is one run, however many loggers race for it.

Until the run's files are complete, run.json is a claim, {"status": "running", "pid": N} (see
sim.results.output), then "interrupted" or "failed" if the run stopped: such a folder is not logged
(`run_state` says why); a claim whose process is gone is reported as killed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tracking.claim import claim, folder_key
from tracking.files import write_text
from tracking.log import DatasetRef, log_run, warn_failed
from tracking.safe_text import redact_tree, shell_command
from tracking.series import step_points
from tracking.store import TrackingConfig, TrackingError

RUN_FILE = "run.json"
TRACKED_FILE = "tracking.json"  # written after logging: {"run_id", "uri", "experiment"}, or {"error", ...}
PARAMS_FILE = "resolved_config.yaml"
SUMMARY_FILE = "summary.json"
RUNNING, INTERRUPTED, FAILED = "running", "interrupted", "failed"  # run.json's status before the run is complete


@dataclass(frozen=True)
class RunRecord:
    """How to log the run in a folder (see the module docstring)."""

    tracking: TrackingConfig
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    datasets: tuple[DatasetRef, ...] = ()
    extra_params: dict[str, str] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    timing: dict[str, float] = field(default_factory=dict)
    start_ms: int | None = None
    end_ms: int | None = None
    unused_params: tuple[str, ...] = ()
    series: str | None = None

    def write(self, folder: Path) -> Path:
        """run.json in `folder`, URIs without their credentials."""
        return write_json(folder / RUN_FILE, asdict(self))

    @classmethod
    def read(cls, folder: Path) -> RunRecord:
        """The record in `folder`'s run.json; TrackingError saying why if it is not a complete
        run's (interrupted, killed, failed: `run_state`)."""
        state = run_state(folder)
        if state is not None:
            raise TrackingError(f"{folder}: the run {state}; nothing to log")
        data = json.loads((folder / RUN_FILE).read_text())
        return cls(
            tracking=TrackingConfig(**data["tracking"]),
            run_name=data.get("run_name"),
            tags=dict(data.get("tags") or {}),
            parent_run_id=data.get("parent_run_id"),
            datasets=tuple(DatasetRef(**d) for d in data.get("datasets") or ()),
            extra_params=dict(data.get("extra_params") or {}),
            artifacts=tuple(data.get("artifacts") or ()),
            timing=dict(data.get("timing") or {}),
            start_ms=data.get("start_ms"),
            end_ms=data.get("end_ms"),
            unused_params=tuple(data.get("unused_params") or ()),
            series=data.get("series"),
        )


def log_folder(
    folder: Path,
    record: RunRecord | None = None,
    *,
    uri: str | None = None,
    raise_errors: bool = False,
    again: bool = False,
    waiting: Callable[[int | None], None] | None = None,
) -> str | None:
    """Log the run in `folder` (its run.json unless `record` is given) under the folder's claim;
    its run id, or None after a warning (`raise_errors`: the error instead). A folder logged
    meanwhile by another process is not logged again (unless `again`): its run id is returned.
    `waiting` is told the pid of the process it waits for, if any."""
    record = record or RunRecord.read(folder)
    tracking = replace(record.tracking, run_name=record.run_name, enabled=True)
    if uri:
        tracking = replace(tracking, uri=uri)
    try:
        with claim(folder, tracking.lock_timeout_s, waiting):
            logged = None if again else logged_run_id(folder)
            return logged or _log_claimed(folder, record, tracking, raise_errors)
    except TrackingError as e:  # the claim was not had in time
        if raise_errors:
            raise
        warn_failed(tracking, str(e), retry_hint(folder))
        return None


def contents(folder: Path, record: RunRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    """The params (resolved_config.yaml and the record's extra ones) and metrics (summary.json and
    the record's timing) the folder's run logs, nested as in those files."""
    params: dict[str, Any] = {**(yaml.safe_load((folder / PARAMS_FILE).read_text()) or {}), **record.extra_params}
    return params, {**json.loads((folder / SUMMARY_FILE).read_text()), **record.timing}


def _log_claimed(folder: Path, record: RunRecord, tracking: TrackingConfig, raise_errors: bool) -> str | None:
    """Log the folder's run (its claim held) and write its tracking.json; the run id, or None."""
    params, metrics = contents(folder, record)
    series = folder / record.series if record.series else None
    steps = step_points(series, record.start_ms or now_ms()) if series and series.exists() else []
    run_id = log_run(
        tracking,
        params,
        metrics,
        [folder / name for name in record.artifacts],
        tags=record.tags,
        parent_run_id=record.parent_run_id,
        datasets=record.datasets,
        retry_hint=retry_hint(folder),
        raise_errors=raise_errors,
        folder=folder_key(folder),
        unused_params=record.unused_params,
        start_ms=record.start_ms,
        end_ms=record.end_ms,
        steps=steps,
    )
    if run_id is not None:
        mark_tracked(folder, tracking, run_id)
    return run_id


def now_ms() -> int:
    """The wall clock in ms since the epoch, as MLflow's times are."""
    return int(time.time() * 1000)


def mark_tracked(folder: Path, tracking: TrackingConfig, run_id: str | None, error: str | None = None) -> Path:
    """Write the folder's tracking.json: the MLflow run it was logged as, or why it was not."""
    outcome: dict[str, str | None] = {"uri": tracking.uri, "experiment": tracking.experiment}
    if run_id is not None:
        outcome["run_id"] = run_id
    else:
        outcome |= {"error": error, "log_later": retry_hint(folder)}
    return write_json(folder / TRACKED_FILE, outcome)


def write_json(path: Path, value: Any) -> Path:
    """`value` as indented JSON at `path`, every URI in it without its credentials, written whole."""
    return write_text(path, json.dumps(redact_tree(value), indent=2) + "\n")


def logged_run_id(folder: Path) -> str | None:
    """The MLflow run the folder was logged as (its tracking.json), or None."""
    try:
        return json.loads((folder / TRACKED_FILE).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        return None


def retry_hint(folder: Path) -> str:
    """The command that logs the run in `folder` later (to the store in its run.json; add
    `--uri URI` for another)."""
    return shell_command("python", "-m", "tracking", folder)


def run_state(folder: Path) -> str | None:
    """Why the run in `folder` cannot be logged, in words ("was interrupted (SIGTERM)", "was
    killed", ...); None when its run.json is a complete record."""
    try:
        data = json.loads((folder / RUN_FILE).read_text())
    except OSError as e:
        return f"has no readable {RUN_FILE} ({e.strerror or e})"
    except ValueError:
        return f"was killed as it started (its {RUN_FILE} is incomplete)"
    if not isinstance(data, dict):
        return f"has a {RUN_FILE} that is not a run's record"
    status, pid = data.get("status"), data.get("pid")
    if status == INTERRUPTED:
        return f"was interrupted ({data.get('reason') or 'by a signal'})"
    if status == FAILED:
        return f"failed ({data.get('reason') or 'an error'})"
    if status == RUNNING:
        return f"is still running (pid {pid})" if isinstance(pid, int) and alive(pid) else "was killed"
    return None if "tracking" in data else f"has a {RUN_FILE} that is not a run's record (no 'tracking')"


def alive(pid: int) -> bool:
    """Whether process `pid` exists (a pid reused since reads as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Log finished runs' output folders to MLflow (the store in their run.json, or --uri)."""
    p = argparse.ArgumentParser(prog="python -m tracking", description=main.__doc__)
    p.add_argument("folders", nargs="+", type=Path, help="output folders holding run.json")
    p.add_argument("--uri", default=None, help="MLflow tracking URI (default: the one the run was given)")
    p.add_argument("--again", action="store_true", help="log folders already logged once more (a new run)")
    args = p.parse_args(argv)
    return 1 if sum(not log_one(folder, args.uri, args.again) for folder in args.folders) else 0


def log_one(folder: Path, uri: str | None, again: bool) -> bool:
    """Log one folder for `main`, printing one line on the outcome; whether it is logged."""
    if not (folder / RUN_FILE).exists():
        print(f"{folder}: no {RUN_FILE}; not a run's output folder")
        return False
    state = run_state(folder)
    if state is not None:
        print(f"{folder}: the run {state}; nothing to log")
        return False
    logged = logged_run_id(folder)
    if logged and not again:
        print(f"{folder}: already logged as run {logged} ({TRACKED_FILE}); --again logs it once more")
        return True

    def waiting(pid: int | None) -> None:
        print(f"{folder}: already being logged by pid {pid}; waiting for it", flush=True)

    run_id = log_folder(folder, uri=uri, again=again, waiting=waiting)
    print(f"{folder}: {'logged as run ' + run_id if run_id else 'not logged (see the warning)'}")
    return run_id is not None

"""Log one run to MLflow: flattened parameters, numeric metrics, tags, dataset inputs, artifacts.

Whatever is sent (parameters, tags, run name, data set sources) and every message about a failure
holds URIs without their credentials (tracking.safe_text). A tracking failure (unreachable server,
locked or broken store) never loses results: callers write them to disk first, and `log_run`
reports the failure as one warning that says what went wrong and how to log the run later.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracking.artifacts import store_artifacts
from tracking.claim import FOLDER_TAG
from tracking.safe_text import redact, redact_tree, redacted_stdout
from tracking.series import Point
from tracking.store import TrackingConfig, check_store, experiment_id, http_limits, store_lock

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"


@dataclass(frozen=True)
class DatasetRef:
    """An input data set of a run, as MLflow records it: name, checksum, where it came from."""

    name: str
    digest: str
    source: str
    context: str = "trace"


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


def applicable_params(params: Mapping[str, Any], unused: Collection[str] = ()) -> dict[str, str]:
    """The params a run logs: `flatten`ed, without null or empty values (an option not set) and
    without the `unused` dotted keys (options the run does not read, e.g. another trace's)."""
    return {
        name: str(value) for name, value in _leaves(params) if value is not None and value != [] and name not in unused
    }


def numeric_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Finite numeric leaves of a nested summary, as dotted metric names."""
    metrics: dict[str, float] = {}
    for name, value in _leaves(summary, prefix):
        if isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
            metrics[name] = float(value)
    return metrics


def log_run(
    config: TrackingConfig,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any],
    artifacts: Iterable[Path] = (),
    *,
    tags: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    datasets: Sequence[DatasetRef] = (),
    retry_hint: str = "",
    raise_errors: bool = False,
    folder: str | None = None,
    unused_params: Collection[str] = (),
    start_ms: int | None = None,
    end_ms: int | None = None,
    steps: Sequence[Point] = (),
) -> str | None:
    """Log one MLflow run; its id, or None after one warning (what failed, and `retry_hint`);
    `raise_errors`: raise instead of warning (the caller reports it, see tracking.background).
    `folder` (`tracking.claim.folder_key`, the caller holding the folder's claim): the run is tagged
    with it, and a run of that folder left RUNNING by a killed logger is finished instead of a new
    one made. `unused_params`: dotted keys left out (`applicable_params`); `start_ms`, `end_ms`:
    the run's own start and end (ms since the epoch; default: now); `steps`: step metrics
    (tracking.series); `artifacts`: stored once (tracking.artifacts)."""
    if not config.enabled:
        return None
    content = RunContent(
        applicable_params(params, unused_params), metrics, list(artifacts), dict(tags or {}), parent_run_id,
        datasets, folder, start_ms, end_ms, steps,
    )  # fmt: skip
    try:
        with redacted_stdout():
            return _log(config, content)
    except Exception as e:  # noqa: BLE001 - any tracking failure must not lose results
        if raise_errors:
            raise
        warn_failed(config, failure(e), retry_hint)
        return None


def failure(error: BaseException) -> str:
    """`Type: first line of the message` of a tracking error (at most 800 characters of message), URIs
    without their credentials (MLflow's errors quote the URL they requested)."""
    text = redact(str(error).splitlines()[0])[:800] if str(error) else ""
    return f"{type(error).__name__}: {text}"


def warn_failed(config: TrackingConfig, what: str, retry_hint: str = "") -> None:
    """The one warning of a failed tracking: what failed, where, and how to log the run later."""
    hint = f" Log it later with: {retry_hint}" if retry_hint else " Check tracking.uri, or set tracking.enabled=false."
    log.warning("MLflow tracking to %r failed (%s); the results are on disk.%s", config.shown_uri, what, hint)


@dataclass(frozen=True)
class RunContent:
    """What `log_run` writes to one run (see its docstring); params already flat."""

    params: dict[str, str]
    metrics: Mapping[str, Any]
    artifacts: list[Path]
    tags: dict[str, str]
    parent_run_id: str | None
    datasets: Sequence[DatasetRef]
    folder: str | None
    start_ms: int | None
    end_ms: int | None
    steps: Sequence[Point]


def _log(config: TrackingConfig, content: RunContent) -> str:
    from mlflow import MlflowClient

    http_limits(config)
    with store_lock(config):
        check_store(config)
        client = MlflowClient(config.uri)
        experiment = experiment_id(client, config.experiment)
        run_tags = redact_tree({**config.tags, **content.tags})
        if content.parent_run_id:
            run_tags[PARENT_TAG] = content.parent_run_id
        if content.folder is not None:
            run_tags[FOLDER_TAG] = content.folder
        run_id = resumed_run(client, experiment, content.folder) if content.folder is not None else None
        if run_id is None:
            name = redact(config.run_name) if config.run_name else None
            run_id = client.create_run(
                experiment, start_time=content.start_ms, tags=run_tags, run_name=name
            ).info.run_id
        try:
            _write(client, run_id, content)
        except BaseException:
            client.set_terminated(run_id, "FAILED", end_time=content.end_ms)
            raise
        client.set_terminated(run_id, "FINISHED", end_time=content.end_ms)
        return run_id


def _write(client: Any, run_id: str, content: RunContent) -> None:
    """Params, metrics (summary and steps), data set inputs and artifacts of the run."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param

    flat = [Param(k, v[:6000]) for k, v in redact_tree(content.params).items()]
    for i in range(0, len(flat), 100):  # MLflow caps a batch at 100 params
        client.log_batch(run_id, params=flat[i : i + 100])
    stamp = content.end_ms or int(time.time() * 1000)
    values = [Metric(k, v, stamp, 0) for k, v in numeric_metrics(content.metrics).items()]
    values += [Metric(*point) for point in content.steps]
    for i in range(0, len(values), 1000):  # and at 1000 metrics
        client.log_batch(run_id, metrics=values[i : i + 1000])
    if content.datasets:
        client.log_inputs(
            run_id,
            datasets=[
                DatasetInput(
                    Dataset(d.name, d.digest, "local", json.dumps({"uri": redact(d.source)})),
                    [InputTag("mlflow.data.context", d.context)],
                )
                for d in content.datasets
            ],
        )
    store_artifacts(client, run_id, content.artifacts)


def resumed_run(client: Any, experiment_id: str, folder: str) -> str | None:
    """The newest run of `folder` left RUNNING by a killed logger (any older one is marked FAILED),
    to be logged again and finished; None if there is none."""
    running = client.search_runs(
        [experiment_id], filter_string="attributes.status = 'RUNNING'", order_by=["attributes.start_time DESC"]
    )  # the folder's tag is compared here: a path may hold quotes that a filter string would need escaped
    mine = [r.info.run_id for r in running if r.data.tags.get(FOLDER_TAG) == folder]
    for stale in mine[1:]:
        client.set_terminated(stale, "FAILED")
    if mine:
        log.info("finishing MLflow run %s, left RUNNING by an interrupted logging of %s", mine[0], folder)
    return mine[0] if mine else None

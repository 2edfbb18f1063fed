"""What identifies a run in MLflow: tags (package version, source command and git commit,
overrides, sweep) and the trace as a data set (name and checksum of the arrivals and lengths
simulated, and of the prompts' prefix blocks when the trace has them)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import pandas as pd

from sim.engine.prefix import PrefixBlocks
from sim.planning.capacity import CapacityConfig
from sim.planning.uncertainty import UncertaintyConfig
from sim.serving.windows import ExecutionConfig
from traces.config import TraceConfig
from traces.jsonl import block_tokens
from tracking import DatasetRef
from tracking.source import source_tags


def package_version() -> str:
    try:
        return version("sweetspot-sim")
    except PackageNotFoundError:
        return "unknown"


def run_tags(overrides: Sequence[str], sweep_id: str | None, baseline_source: str) -> dict[str, str]:
    """Tags of a sim run."""
    tags = {"version": package_version(), "overrides": " ".join(overrides)[:5000], **source_tags("python -m sim")}
    if sweep_id:
        tags["sweep"] = sweep_id
    if baseline_source:
        tags["baseline"] = baseline_source
    return tags


def unused_params(
    trace: TraceConfig, capacity: CapacityConfig, execution: ExecutionConfig, uncertainty: UncertaintyConfig
) -> tuple[str, ...]:
    """The config keys a run does not read, left out of its MLflow params: another trace's options,
    the capacity search's settings when it is off, the windows' when the run is one piece, the
    bands' when there are none (and the bootstrap's without a workload band)."""
    unused = [f"trace.{key}" for key in trace.unused_keys()]
    if not capacity.enabled:
        unused += [f"capacity.{f}" for f in CapacityConfig.__dataclass_fields__ if f != "enabled"]
    if execution.mode == "single":
        unused += [f"execution.{f}" for f in ExecutionConfig.__dataclass_fields__ if f != "mode"]
    if not uncertainty.enabled:
        unused += [f"uncertainty.{f}" for f in UncertaintyConfig.__dataclass_fields__ if f != "samples"]
    elif not uncertainty.workload:
        unused += ["uncertainty.windows", "uncertainty.reach"]
    return tuple(unused)


def trace_digest(requests: pd.DataFrame) -> str:
    """sha256 (first 16 hex digits) of the arrival times and lengths, and of a trace's prefix
    blocks when it has them (`hash_ids` as the prefix cache reads them: which blocks are the same,
    and their size)."""
    h = hashlib.sha256()
    for col in ("arrival_s", "n_in", "n_out"):
        h.update(np.ascontiguousarray(requests[col].to_numpy()).tobytes())
    if "hash_ids" in requests.columns:
        blocks = PrefixBlocks.from_lists(requests["hash_ids"], requests["n_in"].to_numpy(), None, 1)
        h.update(str(block_tokens(requests)).encode())
        for values in (blocks.lengths, blocks.ids):
            h.update(np.ascontiguousarray(values).tobytes())
    return h.hexdigest()[:16]


def trace_dataset(name: str, path: str | None, requests: pd.DataFrame) -> DatasetRef:
    return DatasetRef(name=name, digest=trace_digest(requests), source=path or f"traces:{name}")

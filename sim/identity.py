"""What identifies a run in MLflow: tags (package version, git commit, overrides, sweep) and the
trace as a data set (name and checksum of the arrivals and lengths simulated)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd

from tracking import DatasetRef

ROOT = Path(__file__).resolve().parents[1]


def package_version() -> str:
    try:
        return version("sweetspot-sim")
    except PackageNotFoundError:
        return "unknown"


def git_commit(root: Path = ROOT) -> str | None:
    """HEAD of the checkout the code runs from (None when installed, or git is missing)."""
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def run_tags(overrides: Sequence[str], sweep_id: str | None, baseline_source: str) -> dict[str, str]:
    """Tags of a sim run."""
    tags = {"version": package_version(), "overrides": " ".join(overrides)[:5000]}
    commit = git_commit()
    if commit:
        tags["git_commit"] = commit
    if sweep_id:
        tags["sweep"] = sweep_id
    if baseline_source:
        tags["baseline"] = baseline_source
    return tags


def trace_digest(requests: pd.DataFrame) -> str:
    """sha256 (first 16 hex digits) of the arrival times and lengths."""
    h = hashlib.sha256()
    for col in ("arrival_s", "n_in", "n_out"):
        h.update(np.ascontiguousarray(requests[col].to_numpy()).tobytes())
    return h.hexdigest()[:16]


def trace_dataset(name: str, path: str | None, requests: pd.DataFrame) -> DatasetRef:
    return DatasetRef(name=name, digest=trace_digest(requests), source=path or f"traces:{name}")

"""Tests mirror the package layout; `subprocess_env` is the environment of a command they run."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """This process's environment with the checkout first on PYTHONPATH (a child imports this tree)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}

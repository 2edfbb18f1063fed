"""The README's example scheduler (`longest_left`) runs as written: its Python victim on the simple
reference and its compiled victim on the kernel's replica pick the same request."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from oracle.features import StepCoef
from sim.config import ServerConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import JobTable
from sim.engine.simple import SimpleEngine
from sim.kernel.engine import KernelEngine
from tests.sim.conftest import flat_kv

README = Path(__file__).resolve().parents[3] / "README.md"
COSTS = StepCosts(StepCoef(0.01, 1e-3, 1e-5, 2e-3, 1e-4, 1e-7), StepCoef(3.0, 0.01, 3e-5, 1e-3, 0.01, 4e-7), 60.0)


def example() -> dict[str, Any]:
    """The README's `longest_left` block, run with `@register` a no-op (the registry stays as
    shipped) and its compiled function uncached (its code has no file for numba's cache)."""
    text = README.read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class LongestLeft" in b)
    namespace: dict[str, Any] = {}
    exec(
        compile(block.replace("@register\n", "").replace("@njit(cache=True)", "@njit"), "README longest_left", "exec"),
        namespace,
    )
    return namespace


def test_the_readme_scheduler_picks_the_request_with_the_most_output_left():
    ns = example()
    picked = []
    for engine in (SimpleEngine, KernelEngine):
        jobs = JobTable([8, 7, 5, 6], [50, 90, 70, 20])
        kv = flat_kv(10_000)
        args: tuple[Any, ...] = (jobs, ServerConfig(block_size=1, max_batch_size=8), kv)
        e = engine(*args) if engine is SimpleEngine else engine(*args, COSTS)
        for j in range(4):
            e.enqueue(j)
        for _ in range(3):
            e.finish_step(e.form_step(0.0))
        picked.append(ns["LongestLeft"]().victim(e) if engine is SimpleEngine else ns["kernel_victim"](e.r))
    assert picked == [1, 1]  # 90 output tokens, the most left
    assert np.isscalar(picked[1])

"""Physical plausibility of an oracle against the GPU it names (`oracle/data/gpus`).

An oracle file passes its format checks with any non-negative coefficients; these checks catch
the numbers no GPU can produce: steps drawing far more than the board's power limit (another
GPU's coefficients under this GPU's label, or energy and time in the wrong units), or far less than
its idle power (energy in kWh, say), and a memory larger than the GPU has (a KV cache that does not
exist). The tolerances flag the physically impossible, not the unusual: the shipped oracles, derived
from datasheets, reach 1.64× the board limit at their largest steps (the simulator throttles them
to the limit) and never go below 3.8× idle power.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from oracle.arch import GpuSpec, find_gpu, gpu_names, load_gpu

if TYPE_CHECKING:
    from oracle.model import Oracle

POWER_SLACK = 2.0
"""Implied step power (W) may reach this many times the GPU's board power limit."""
IDLE_SLACK = 0.5
"""... and must be at least this share of its idle power (W)."""
MEMORY_SLACK = 1.1
"""memory.gpu_memory_bytes may exceed the datasheet's memory by this factor (GB vs GiB: 1.074)."""


def implausible(oracle: Oracle, steps: np.ndarray) -> list[str]:
    """What is physically impossible about `oracle` on its GPU, judged at the step feature vectors
    `steps` (rows, 6: `oracle.model.representative_steps`); empty when nothing is.

    The GPU is the datasheet `oracle.gpu` names, times the replica's `oracle.gpus`; for a GPU
    without one, the oracle's own power limit, or POWER_SLACK × the largest limit of any known GPU,
    bounds the power.
    """
    gpu = find_gpu(oracle.gpu)
    power = oracle.step_energy(steps) / oracle.step_time(steps)
    limit, idle = _bounds(oracle, gpu)
    where = f"the {gpu.full_name}'s" if gpu else "the"
    problems = []
    if power.max() > POWER_SLACK * limit:
        problems.append(
            f"implied step power up to {power.max():.3g} W, over {POWER_SLACK:g}× {where} power limit of "
            f"{limit:.0f} W: no GPU draws that (coefficients of another GPU, or energy and time in mismatched units?)"
        )
    if power.min() < IDLE_SLACK * idle:
        problems.append(
            f"implied step power down to {power.min():.3g} W, under {IDLE_SLACK:g}× {where} idle power of "
            f"{idle:.0f} W (energy in kWh or Wh instead of J?)"
        )
    g = oracle.gpus
    board = 0.0 if gpu is None else gpu.power_limit_w * g
    if gpu is not None and oracle.power_limit_w is not None and oracle.power_limit_w > POWER_SLACK * board:
        whose = f"the {gpu.full_name}'s board limit" if g == 1 else f"the board limit of {g} × {gpu.full_name}"
        problems.append(f"power_limit_w {oracle.power_limit_w:.0f} W is over {POWER_SLACK:g}× {whose} ({board:.0f} W)")
    return problems + _memory_problems(oracle, gpu)


def _bounds(oracle: Oracle, gpu: GpuSpec | None) -> tuple[float, float]:
    """(power limit, idle power) in W to judge the oracle's steps by."""
    if gpu is not None:
        return gpu.power_limit_w * oracle.gpus, gpu.idle_power_w * oracle.gpus
    limit = oracle.power_limit_w or max(load_gpu(n).power_limit_w for n in gpu_names())
    return limit, oracle.idle_power_w


def _memory_problems(oracle: Oracle, gpu: GpuSpec | None) -> list[str]:
    memory = oracle.memory
    if memory is None:
        return []
    if memory.weight_bytes > memory.gpu_memory_bytes:
        return [
            f"memory.weight_bytes {memory.weight_bytes:.3g} exceed memory.gpu_memory_bytes "
            f"{memory.gpu_memory_bytes:.3g}: the model does not fit, no KV cache is left"
        ]
    if gpu is not None and memory.gpu_memory_bytes > MEMORY_SLACK * gpu.memory_bytes * oracle.gpus:
        whose = f"the {gpu.full_name}'s" if oracle.gpus == 1 else f"{oracle.gpus} × the {gpu.full_name}'s"
        return [
            f"memory.gpu_memory_bytes {memory.gpu_memory_bytes:.3g} is over {MEMORY_SLACK:g}× {whose} "
            f"{gpu.memory_bytes * oracle.gpus:.3g} bytes: the KV cache would be larger than the GPU's memory"
        ]
    return []

"""What a benchmark row is replayed with: its replica's oracle, the benchmark's engine settings,
its task's workload and the prompt lengths of its requests.

Engine settings are the benchmark's (oracle/data/PROVENANCE.md): `max_batch_size = max_num_seqs`,
8192 batched tokens, chunked prefill, 0.9 of GPU memory, the `vllm` scheduler with 16-token blocks.

A row's oracle is `oracle.build.oracle_for(model_id, gpu_model, num_gpus, expert_parallel > 1)`:
the shipped oracle of that replica layout, or one derived from the shipped hardware constants.
Rows it cannot give an oracle for (a model with no architecture; a layout that cannot serve the
model, such as a model too large for its GPUs) have a reason (`unresolved_reason`) and are skipped
with it (`sim.validation.replay.replays`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from oracle.build import oracle_for
from oracle.derive import LayoutError
from oracle.model import Oracle
from sim.config import ServerConfig
from sim.validation.table import BenchmarkRow
from sim.validation.workload import TASKS, PromptLengths, TaskWorkload, read_task_prompts

MAX_NUM_BATCHED_TOKENS = 8192  # benchmark's vLLM `max-num-batched-tokens`
KV_MEMORY_FRACTION = 0.9  # vLLM's default `gpu-memory-utilization`
PROMPT_SIGMA = 1.0  # log-space spread of prompt lengths for oracles that record none

PromptChoice = Callable[[BenchmarkRow, Oracle], PromptLengths]
Prompts = PromptLengths | Mapping[str, PromptLengths] | PromptChoice | None


class MissingPromptsError(ValueError):
    """No prompt lengths are known for a row (its task has none in task_prompts.csv, or its oracle
    records no calibration prompts)."""


@functools.cache
def layout_oracle(model_id: str, gpu_model: str, gpus: int, expert_parallel: bool, family: bool = False) -> Oracle:
    """`oracle.build.oracle_for`, once per process per (model, GPU, GPUs, expert parallel,
    family): KeyError for an unknown model or GPU, `oracle.derive.LayoutError` for a refused layout."""
    return oracle_for(model_id, gpu_model, gpus, expert_parallel, family=family)


def row_oracle(row: BenchmarkRow, family: bool = False) -> Oracle:
    """The oracle of a row's replica: its model on `num_gpus` of its GPU, experts expert parallel
    where the row's `expert_parallel` > 1 (see `layout_oracle` for the errors); `family`: with
    its GPU family's constants even where the shipped oracle is refined on its measured runs."""
    return layout_oracle(row.model_id, row.gpu_model, row.num_gpus, row.expert_parallel > 1, family)


def unresolved_reason(row: BenchmarkRow) -> str | None:
    """Why a row has no oracle (unknown model or GPU, refused layout), or None if it has one."""
    try:
        row_oracle(row)
    except KeyError as e:  # oracle_for's message lists every known model: keep its first clause
        return str(e.args[0]).split("; known models")[0] if e.args else "unknown model or GPU"
    except LayoutError as e:
        return str(e)
    return None


def workload_for(row: BenchmarkRow) -> TaskWorkload:
    """The request facts of a row's task (KeyError naming the known tasks for another task)."""
    if row.task not in TASKS:
        raise KeyError(f"no workload facts for task {row.task!r} (known: {', '.join(TASKS)})")
    return TASKS[row.task]


def server_config(
    max_num_seqs: int, *, scheduler: str = "vllm", record_features: bool = False, prefix_caching: bool = True
) -> ServerConfig:
    """The benchmark's engine settings at one batch cap (chunked prefill, as vLLM V1 runs; prefix
    caching as the scheduler has it by default, vLLM's on, or off where `prefix_caching` is false)."""
    return ServerConfig(
        record_features=record_features,
        scheduler=scheduler,
        prefix_caching=None if prefix_caching else False,
        block_size=16,
        mode="continuous",
        max_batch_size=int(max_num_seqs),
        max_num_tokens=max(MAX_NUM_BATCHED_TOKENS, int(max_num_seqs)),
        chunked_prefill=True,
        kv_memory_fraction=KV_MEMORY_FRACTION,
    )


def default_prompts(oracle: Oracle) -> PromptLengths:
    """The prompts the oracle's hardware constants were calibrated with (lognormal mean and σ)."""
    mean = oracle.provenance.get("calibration_prompt_tokens")
    if mean is None:
        raise MissingPromptsError(f"oracle {oracle.name} records no calibration_prompt_tokens; give the prompt lengths")
    sigma = oracle.provenance.get("calibration_prompt_sigma", PROMPT_SIGMA)
    return PromptLengths("lognormal", float(mean), float(sigma))


def task_prompts(row: BenchmarkRow, oracle: Oracle) -> PromptLengths:
    """The prompts a row is replayed with by default: its task's line of the shipped
    task_prompts.csv (fitted by `python -m sim.validation.prompts`), or the oracle's calibration
    prompts where that line gives no mean (LM Arena chat)."""
    line = read_task_prompts().get(row.task)
    if line is None:
        raise MissingPromptsError(
            f"no prompt lengths for task {row.task!r} in task_prompts.csv (python -m sim.validation.prompts fits them)"
        )
    return default_prompts(oracle) if line.prompts is None else line.prompts


def prompts_for(prompts: Prompts, row: BenchmarkRow, oracle: Oracle) -> PromptLengths:
    """The prompt lengths a row is replayed with, from what `sim.validation.replay.replays` was given."""
    if isinstance(prompts, PromptLengths):
        return prompts
    if callable(prompts):
        return prompts(row, oracle)
    if prompts is not None and row.gpu_model in prompts:
        return prompts[row.gpu_model]
    return task_prompts(row, oracle)

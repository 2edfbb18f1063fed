"""Which measured runs the calibration does not fit on, and why: a rule per reason, on the wide
table alone, that anyone can check.

- `DATA_PARALLEL`: vLLM ran the run with data-parallel attention (`data_parallel` > 1: each rank its
  own share of the sequences and its own prefills, the ranks in lock step at every MoE layer), a layout
  the simulator does not model; it replays such a run as tensor-parallel attention
  (`sim.validation.replay`), so fitting constants on it would fit the wrong layout.
- `NOT_GPU_BOUND`: the run delivered fewer output tokens per second than its twin (same model,
  precision, task, GPUs per replica, parallel degrees and batch cap) on a GPU with less of both dense
  compute and memory bandwidth (B200 against H100). The model describes serving that the GPU limits;
  what held this run back was not the GPU. In ML.ENERGY v3 these are B200's one-GPU GPQA runs of the
  Qwen3 and Nemotron models (a flat ~33 ms median ITL from batch 8 to 64 at 300-450 W of 1000 W, where
  H100 gives 12-28 ms) and Llama-3.1-8B's LM Arena runs at caps 128-512.

Screened runs stay in `python -m sim.validate`'s table, marked in its `screen` column, and count in
its all-rows means; the calibration (`oracle.hwcal`, `oracle.refine`) leaves them out and its report
lists them.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from oracle.arch import GpuSpec, load_gpu

DATA_PARALLEL = "data-parallel attention (not modelled)"
NOT_GPU_BOUND = "slower than on a GPU with less compute and bandwidth (not GPU-bound)"
REASONS = (DATA_PARALLEL, NOT_GPU_BOUND)

# A run's twin on another GPU has every one of these equal (the wide table's columns).
TWIN = ["model_id", "weight_precision", "task", "num_gpus", "expert_parallel", "data_parallel", "max_num_seqs"]
THROUGHPUT = "output_throughput_tokens_per_sec"


def weaker(a: GpuSpec, b: GpuSpec) -> bool:
    """Whether GPU `a` has less dense (bf16) compute and less memory bandwidth than `b`."""
    return a.peak_flops < b.peak_flops and a.memory_bandwidth < b.memory_bandwidth


def gpu_of_label(label: str) -> GpuSpec:
    """The shipped spec of a measurement table's `gpu_model` label ('H100'; KeyError if unknown)."""
    return load_gpu(label.lower())


def screen(table: pd.DataFrame, gpu: Callable[[str], GpuSpec] = gpu_of_label) -> pd.Series:
    """Per row of the wide `table` (its index kept): the `REASONS` entry it is screened for, or ''
    to keep it. `gpu` maps a `gpu_model` label ('H100') to its spec; a label it does not know
    (KeyError or ValueError) is compared with nothing."""
    missing = [c for c in (*TWIN, "gpu_model", THROUGHPUT) if c not in table.columns]
    if missing:
        raise ValueError(f"cannot screen a table without the columns {missing}")
    reason = pd.Series("", index=table.index, dtype=object)
    specs = {label: _spec(gpu, str(label)) for label in table["gpu_model"].unique()}
    for label, spec in specs.items():
        for other, other_spec in specs.items():
            if spec is None or other_spec is None or not weaker(other_spec, spec):
                continue
            mine = table[table["gpu_model"] == label]
            twins = table[table["gpu_model"] == other].groupby(TWIN)[THROUGHPUT].max()
            best = mine.join(twins.rename("twin"), on=TWIN)["twin"]
            reason[best.index[(mine[THROUGHPUT] < best).to_numpy()]] = NOT_GPU_BOUND
    reason[table["data_parallel"].to_numpy() > 1] = DATA_PARALLEL
    return reason


def _spec(gpu: Callable[[str], GpuSpec], label: str) -> GpuSpec | None:
    try:
        return gpu(label)
    except (KeyError, ValueError):
        return None

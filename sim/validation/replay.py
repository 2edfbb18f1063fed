"""Replay benchmark rows through `sim.serving.run.simulate` with the row's oracle, and compare.

Engine settings are the benchmark's (oracle/data/PROVENANCE.md): `max_batch_size = max_num_seqs`,
8192 batched tokens, chunked prefill, 0.9 of GPU memory, the `vllm` scheduler with 16-token blocks.

A row's oracle is `oracle.build.oracle_for(model_id, gpu_model, num_gpus, expert_parallel > 1)`:
the shipped oracle of that replica layout, or one derived from the shipped hardware constants.
Rows it cannot give an oracle for (a model with no architecture; a layout that cannot serve the
model, such as the hybrid Mamba-Transformer Nemotrons or a model too large for its GPUs) are
skipped with the reason. Data-parallel rows (`data_parallel` > 1: Qwen3-Coder-480B-FP8 on
sourcegraph-fim) are replayed as ONE replica of `num_gpus` GPUs running the whole `max_num_seqs`:
vLLM ran them as data-parallel attention (each rank its share of the sequences) with the experts
expert parallel over all GPUs, which the model approximates as tensor-parallel attention.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from oracle.build import oracle_for
from oracle.derive import LayoutError
from oracle.model import Oracle
from oracle.overlap import below_knees
from sim.config import ServerConfig
from sim.serving.run import simulate
from sim.validation.table import METRICS, BenchmarkRow, HistKey, Metrics, OutputHistogram
from sim.validation.window import (
    EmptyWindowError,
    Spans,
    Window,
    first_tokens_per_span,
    median_itl_s,
    median_span,
    steady_window,
    window_metrics,
    window_share,
)
from sim.validation.workload import (
    TASKS,
    PromptLengths,
    TaskWorkload,
    build_requests,
    read_task_prompts,
)

MAX_NUM_BATCHED_TOKENS = 8192  # benchmark's vLLM `max-num-batched-tokens`
KV_MEMORY_FRACTION = 0.9  # vLLM's default `gpu-memory-utilization`
PROMPT_SIGMA = 1.0  # log-space spread of prompt lengths for oracles that record none

PromptChoice = Callable[[BenchmarkRow, Oracle], PromptLengths]
Prompts = PromptLengths | Mapping[str, PromptLengths] | PromptChoice | None
# Columns of `validate`'s table before the metrics: the run, its layout, its model's kind.
ID_COLUMNS = (
    "config_id",
    "model_id",
    "task",
    "gpu_model",
    "num_gpus",
    "expert_parallel",
    "data_parallel",
    "weight_precision",
    "kind",
    "max_num_seqs",
    "prompt_mean_tokens",
)
COLUMNS = (*ID_COLUMNS, *(f"{m}_{s}" for m in METRICS for s in ("measured", "simulated", "err_pct")))
DATA_PARALLEL_NOTE = (
    "data-parallel rows are replayed as one replica of num_gpus GPUs running the whole max_num_seqs: "
    "vLLM ran them with data-parallel attention and expert-parallel experts, which the model "
    "approximates as tensor-parallel attention"
)


class MissingPromptsError(ValueError):
    """No prompt lengths are known for a row (its task has none in task_prompts.csv, or its oracle
    records no calibration prompts)."""


@dataclass(frozen=True)
class ReplayMetrics:
    """Simulated figures of one row, its window (s) and the rule that opened it ('max_num_seqs',
    the benchmark's, or 'peak batch' where the simulated engine never ran max_num_seqs requests
    before the window closes), requests replayed, mean prompt (tokens) and wall time (s)."""

    metrics: Metrics
    window: Window
    window_rule: str
    n_requests: int
    prompt_mean_tokens: float
    wall_s: float
    features_per_token: np.ndarray | None = None  # window's summed step features / its output tokens
    median_step_features: np.ndarray | None = None  # features of the step at the median ITL
    experts_per_token: float = 0.0  # window's expected shares of routed experts read / its output tokens
    median_step_experts: float = 0.0  # the share of routed experts the median-ITL step reads
    prompt_knees: np.ndarray | None = None  # window's Σ min(prompt tokens a step, knee) / output tokens at `KNEES`


@functools.cache
def layout_oracle(model_id: str, gpu_model: str, gpus: int, expert_parallel: bool) -> Oracle:
    """`oracle.build.oracle_for`, once per process per (model, GPU, GPUs, expert parallel):
    KeyError for an unknown model or GPU, `oracle.derive.LayoutError` for a refused layout."""
    return oracle_for(model_id, gpu_model, gpus, expert_parallel)


def row_oracle(row: BenchmarkRow) -> Oracle:
    """The oracle of a row's replica: its model on `num_gpus` of its GPU, experts expert parallel
    where the row's `expert_parallel` > 1 (see `layout_oracle` for the errors)."""
    return layout_oracle(row.model_id, row.gpu_model, row.num_gpus, row.expert_parallel > 1)


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


def model_kind(row: BenchmarkRow, oracle: Oracle | None = None) -> str:
    """'dense', 'moe' or 'hybrid': from the row's architecture label where the table has one,
    else from the oracle (a mixture of experts records its expert reads)."""
    label = (row.architecture or "").lower()
    if "hybrid" in label or "mamba" in label:
        return "hybrid"
    if "moe" in label or "mixture" in label:
        return "moe"
    if "dense" in label:
        return "dense"
    return "moe" if oracle is not None and oracle.experts is not None else "dense"


def server_config(max_num_seqs: int, *, scheduler: str = "vllm", record_features: bool = False) -> ServerConfig:
    """The benchmark's engine settings at one batch cap (chunked prefill, as vLLM V1 runs)."""
    return ServerConfig(
        record_features=record_features,
        scheduler=scheduler,
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


def replay_row(
    row: BenchmarkRow,
    oracle: Oracle,
    prompts: PromptLengths,
    *,
    histogram: OutputHistogram | None = None,
    seed: int = 0,
    requests: pd.DataFrame | None = None,
    record_features: bool = False,
    scheduler: str = "vllm",
) -> ReplayMetrics:
    """Simulate one row (its `requests`, or ones built from `histogram` and `prompts`) and
    measure the simulated run as the benchmark measured the real one (with `record_features`,
    also the window's step features per output token, for calibration). Requests built here
    follow the row's task (`workload_for`: distinct prompts, output cap, max-model-len)."""
    if requests is None:
        if histogram is None:
            raise ValueError("replay_row needs the row's output-length histogram or its requests")
        requests = build_requests(histogram, prompts, seed=seed, task=workload_for(row))
    t0 = time.perf_counter()
    config = server_config(row.max_num_seqs, scheduler=scheduler, record_features=record_features)
    result = simulate(requests, oracle, config)
    (stats,) = result.servers
    records = result.requests
    first, finish = records["first_token_s"].to_numpy(float), records["finish_s"].to_numpy(float)
    spans = Spans.from_stats(stats)
    window, rule = _window(first, finish, row.max_num_seqs, int(spans.running.max(initial=0)))
    w = window_metrics(spans, window, stats.idle_power_w)
    decode_tokens = spans.tokens - first_tokens_per_span(spans, first)
    itl = median_itl_s(spans, decode_tokens)
    sim = Metrics(w.batch, w.throughput, w.energy_per_token, w.power, itl * 1e3)
    mean_in = float(requests["n_in"].mean())
    x = x_itl = knees = None
    moe = moe_itl = 0.0
    if stats.span_features is not None:
        share = window_share(spans, window)[0]
        x = share @ stats.span_features / w.tokens
        i = median_span(spans, decode_tokens)
        x_itl = None if i is None else stats.span_features[i] / spans.steps[i]
        steps = np.maximum(spans.steps, 1)  # a span's steps each run its tokens / steps
        knees = below_knees(stats.span_features[:, 4] / steps, spans.steps, share) / w.tokens
        if oracle.experts is not None:
            per_step = oracle.experts.share((stats.span_features[:, 1] + stats.span_features[:, 4]) / steps)
            moe = float(share @ (spans.steps * per_step) / w.tokens)
            moe_itl = 0.0 if i is None else float(per_step[i])
    wall = time.perf_counter() - t0
    return ReplayMetrics(sim, window, rule, len(requests), mean_in, wall, x, x_itl, moe, moe_itl, knees)


def _window(first: np.ndarray, finish: np.ndarray, cap: int, peak_batch: int) -> tuple[Window, str]:
    """The benchmark's window; where the simulated batch peaked below the cap (KV-bound) and so
    that window would be empty, the one opened once `peak_batch` requests have a first token."""
    first, finish = first[np.isfinite(first)], finish[np.isfinite(finish)]
    try:
        return steady_window(first, finish, cap), "max_num_seqs"
    except EmptyWindowError:
        if not 0 < peak_batch < cap:
            raise
        return steady_window(first, finish, cap, opened_by=peak_batch), "peak batch"


def replays(
    rows: list[BenchmarkRow],
    histograms: Mapping[HistKey, OutputHistogram],
    prompts: Prompts = None,
    *,
    seed: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = print,
    scheduler: str = "vllm",
    record_features: bool = False,
) -> Iterator[tuple[BenchmarkRow, Oracle, PromptLengths, ReplayMetrics]]:
    """Replay every row that has an oracle (`row_oracle`), a histogram (`row.hist_key`) and known
    prompts, yielding (row, its oracle, its prompts, what the replay measured). `prompts`: one
    distribution, one per gpu_model, a function of (row, oracle), or None (`task_prompts`: the
    task's fitted prompts, or each oracle's calibration prompts for LM Arena chat). Every skipped
    row is logged once with the reason; the first data-parallel row replayed logs how it is
    approximated (`DATA_PARALLEL_NOTE`)."""
    bar = _bar(len(rows), progress)
    noted_dp = False
    for row in rows:
        bar.update(1)
        what = row.label
        reason = unresolved_reason(row)
        if reason is not None:
            log(f"skipped {what}: {reason}")
            continue
        if row.hist_key not in histograms:
            log(f"skipped {what}: no output-length histogram for this run")
            continue
        try:
            workload_for(row)
        except KeyError as e:
            log(f"skipped {what}: {e.args[0]}")
            continue
        oracle = row_oracle(row)
        try:
            chosen = _prompts_for(prompts, row, oracle)
        except MissingPromptsError as e:
            log(f"skipped {what}: {e}")
            continue
        if row.data_parallel > 1 and not noted_dp:
            log(f"note: {what} is data-parallel ({row.data_parallel} ranks); {DATA_PARALLEL_NOTE} (said once)")
            noted_dp = True
        try:
            r = replay_row(
                row,
                oracle,
                chosen,
                histogram=histograms[row.hist_key],
                seed=seed,
                scheduler=scheduler,
                record_features=record_features,
            )
        except EmptyWindowError as e:
            log(f"skipped {what}: the simulated run has no steady-state window ({e})")
            continue
        if r.window_rule != "max_num_seqs":
            log(f"note: {what}: simulated batch peaked below the cap; window opened by the {r.window_rule}")
        yield row, oracle, chosen, r
    bar.close()


def validate(
    rows: list[BenchmarkRow],
    histograms: Mapping[HistKey, OutputHistogram],
    prompts: Prompts = None,
    *,
    seed: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = print,
    scheduler: str = "vllm",
) -> pd.DataFrame:
    """`replays`, one line per replayed row with the `ID_COLUMNS`, then `m_measured,
    m_simulated, m_err_pct` per metric."""
    out = [
        comparison(row, r.metrics, kind=model_kind(row, oracle), prompt_mean_tokens=r.prompt_mean_tokens)
        for row, oracle, _, r in replays(
            rows, histograms, prompts, seed=seed, progress=progress, log=log, scheduler=scheduler
        )
    ]
    return pd.DataFrame(out, columns=list(COLUMNS))


def comparison(
    row: BenchmarkRow, simulated: Metrics, *, kind: str | None = None, prompt_mean_tokens: float = float("nan")
) -> dict[str, object]:
    """One output line: the run's `ID_COLUMNS`, then measured, simulated and error (%) of every metric."""
    line: dict[str, object] = {
        "config_id": row.config_id,
        "model_id": row.model_id,
        "task": row.task,
        "gpu_model": row.gpu_model,
        "num_gpus": row.num_gpus,
        "expert_parallel": row.expert_parallel,
        "data_parallel": row.data_parallel,
        "weight_precision": row.weight_precision,
        "kind": model_kind(row) if kind is None else kind,
        "max_num_seqs": row.max_num_seqs,
        "prompt_mean_tokens": prompt_mean_tokens,
    }
    for m in METRICS:
        meas, sim = getattr(row.measured, m), getattr(simulated, m)
        line |= {f"{m}_measured": meas, f"{m}_simulated": sim, f"{m}_err_pct": (sim - meas) / meas * 100.0}
    return line


def mean_abs_error(df: pd.DataFrame, by: str | list[str] | None = None) -> pd.DataFrame:
    """Mean absolute error (%) per metric, over all rows or per value of column(s) `by`."""
    errs = df[[f"{m}_err_pct" for m in METRICS]].abs().set_axis(list(METRICS), axis=1)
    if by is None:
        return errs.mean().to_frame("all rows").T
    keys = [df[c] for c in ([by] if isinstance(by, str) else by)]
    return errs.groupby(keys).mean()


def _prompts_for(prompts: Prompts, row: BenchmarkRow, oracle: Oracle) -> PromptLengths:
    if isinstance(prompts, PromptLengths):
        return prompts
    if callable(prompts):
        return prompts(row, oracle)
    if prompts is not None and row.gpu_model in prompts:
        return prompts[row.gpu_model]
    return task_prompts(row, oracle)


def _bar(total: int, enabled: bool) -> Any:
    from sim.console.progress import progress_bar

    return progress_bar(enabled, total=total, unit="row", desc="replaying", leave=False)

"""Replay benchmark rows through `sim.run.simulate` with the row's shipped oracle, and compare.

Engine settings are the benchmark's (oracle/data/PROVENANCE.md): `max_batch_size = max_num_seqs`,
8192 batched tokens, chunked prefill, 0.9 of GPU memory, the `vllm` scheduler with 16-token blocks.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from oracle.arch import find_gpu, find_model
from oracle.model import Oracle, shipped_oracles
from sim.config import ServerConfig
from sim.run import simulate
from sim.validation.table import KEY, METRICS, BenchmarkRow, Metrics, OutputHistogram
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
from sim.validation.workload import PromptLengths, build_requests

MAX_NUM_BATCHED_TOKENS = 8192  # benchmark's vLLM `max-num-batched-tokens`
KV_MEMORY_FRACTION = 0.9  # vLLM's default `gpu-memory-utilization`
PROMPT_SIGMA = 1.0  # log-space spread of prompt lengths for oracles that record none

PromptChoice = Callable[[BenchmarkRow, Oracle], PromptLengths]
Prompts = PromptLengths | Mapping[str, PromptLengths] | PromptChoice | None


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


def oracle_name(model_id: str, gpu_model: str) -> str | None:
    """Name of the shipped oracle for an HF model id and a GPU label, or None if none ships."""
    model, gpu = find_model(model_id), find_gpu(gpu_model)
    if model is None or gpu is None:
        return None
    name = f"{model.name}_{gpu.name}"
    return name if name in shipped_oracles() else None


@functools.cache
def shipped_oracle(name: str) -> Oracle:
    """A shipped oracle, read once per process (replays and calibration grids reuse it)."""
    return Oracle.load(name)


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
        raise ValueError(f"oracle {oracle.name} records no calibration_prompt_tokens; give the prompt lengths")
    sigma = oracle.provenance.get("calibration_prompt_sigma", PROMPT_SIGMA)
    return PromptLengths("lognormal", float(mean), float(sigma))


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
    also the window's step features per output token, for calibration)."""
    if requests is None:
        if histogram is None:
            raise ValueError("replay_row needs the row's output-length histogram or its requests")
        requests = build_requests(histogram, prompts, seed=seed)
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
    x = x_itl = None
    if stats.span_features is not None:
        x = window_share(spans, window)[0] @ stats.span_features / w.tokens
        i = median_span(spans, decode_tokens)
        x_itl = None if i is None else stats.span_features[i] / spans.steps[i]
    return ReplayMetrics(sim, window, rule, len(requests), mean_in, time.perf_counter() - t0, x, x_itl)


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


def validate(
    rows: list[BenchmarkRow],
    histograms: Mapping[tuple[str, str, int], OutputHistogram],
    prompts: Prompts = None,
    *,
    seed: int = 0,
    progress: bool = False,
    log: Callable[[str], None] = print,
    scheduler: str = "vllm",
) -> pd.DataFrame:
    """Replay every row that has a shipped oracle and a histogram; one line per replayed row with
    `m_measured, m_simulated, m_err_pct` per metric. `prompts`: one distribution, one per
    gpu_model, a function of (row, oracle), or None (each oracle's calibration mean, σ = 1.0).
    Skipped rows are logged."""
    bar = _bar(len(rows), progress)
    out = []
    for row in rows:
        bar.update(1)
        name = oracle_name(row.model_id, row.gpu_model)
        what = f"{row.model_id} on {row.gpu_model} at max_num_seqs {row.max_num_seqs}"
        if name is None:
            log(f"skipped {what}: no shipped oracle for this model and GPU")
            continue
        if row.key not in histograms:
            log(f"skipped {what}: no output-length histogram for this run")
            continue
        oracle = shipped_oracle(name)
        chosen = _prompts_for(prompts, row, oracle)
        try:
            r = replay_row(row, oracle, chosen, histogram=histograms[row.key], seed=seed, scheduler=scheduler)
        except EmptyWindowError as e:
            log(f"skipped {what}: the simulated run has no steady-state window ({e})")
            continue
        if r.window_rule != "max_num_seqs":
            log(f"note: {what}: simulated batch peaked below the cap; window opened by the {r.window_rule}")
        out.append(comparison(row, r.metrics))
    bar.close()
    columns = [*KEY, *(f"{m}_{s}" for m in METRICS for s in ("measured", "simulated", "err_pct"))]
    return pd.DataFrame(out, columns=columns)


def comparison(row: BenchmarkRow, simulated: Metrics) -> dict[str, object]:
    """One output line: the key, then measured, simulated and error (%) of every metric."""
    line: dict[str, object] = dict(zip(KEY, row.key, strict=True))
    for m in METRICS:
        meas, sim = getattr(row.measured, m), getattr(simulated, m)
        line |= {f"{m}_measured": meas, f"{m}_simulated": sim, f"{m}_err_pct": (sim - meas) / meas * 100.0}
    return line


def mean_abs_error(df: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Mean absolute error (%) per metric, over all rows or per value of column `by`."""
    errs = df[[f"{m}_err_pct" for m in METRICS]].abs().set_axis(list(METRICS), axis=1)
    if by is None:
        return errs.mean().to_frame("all rows").T
    return errs.groupby(df[by]).mean()


def _prompts_for(prompts: Prompts, row: BenchmarkRow, oracle: Oracle) -> PromptLengths:
    if isinstance(prompts, PromptLengths):
        return prompts
    if callable(prompts):
        return prompts(row, oracle)
    if prompts is not None and row.gpu_model in prompts:
        return prompts[row.gpu_model]
    return default_prompts(oracle)


def _bar(total: int, enabled: bool) -> Any:
    from sim.progress import progress_bar

    return progress_bar(enabled, total=total, unit="row", desc="replaying", leave=False)

"""Replay benchmark rows through `sim.serving.run.simulate` with the row's oracle, and measure the
simulated run as the benchmark measured the real one.

What a row is replayed with (oracle, engine settings, workload, prompts) is
`sim.validation.row_setup`; the comparison with the measurements is `sim.validation.compare`.
Rows with no oracle are skipped with the reason. Data-parallel rows (`data_parallel` > 1:
Qwen3-Coder-480B-FP8 on sourcegraph-fim) are replayed as ONE replica of `num_gpus` GPUs running
the whole `max_num_seqs`: vLLM ran them as data-parallel attention (each rank its share of the
sequences) with the experts expert parallel over all GPUs, which the model approximates as
tensor-parallel attention.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from oracle.model import Oracle
from oracle.overlap import below_knees
from sim.config import ServerConfig
from sim.engine.kv_sizing import replica_kv
from sim.engine.settings import prefix_cache_refusal
from sim.serving.run import simulate
from sim.validation.row_setup import (
    MissingPromptsError,
    Prompts,
    prompts_for,
    row_oracle,
    server_config,
    unresolved_reason,
    workload_for,
)
from sim.validation.table import BenchmarkRow, HistKey, Metrics, OutputHistogram
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
from traces.jsonl import block_tokens

DATA_PARALLEL_NOTE = (
    "data-parallel rows are replayed as one replica of num_gpus GPUs running the whole max_num_seqs: "
    "vLLM ran them with data-parallel attention and expert-parallel experts, which the model "
    "approximates as tensor-parallel attention"
)


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
    prefix_cache_off: str = ""  # why the replay ran without the prefix cache its scheduler keeps ('' if it did not)


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
    prefix_caching: bool = True,
) -> ReplayMetrics:
    """Simulate one row (its `requests`, or ones built from `histogram` and `prompts`) and
    measure the simulated run as the benchmark measured the real one (with `record_features`,
    also the window's step features per output token, for calibration). Requests built here
    follow the row's task (`workload_for`: distinct prompts, output cap, max-model-len); their
    resent prompts hit the prefix cache unless `prefix_caching` is false (`server_config`) or the
    engine cannot model it on this replica (`prefix_cache_off` says why, and the engine's warning
    is not raised)."""
    if requests is None:
        if histogram is None:
            raise ValueError("replay_row needs the row's output-length histogram or its requests")
        requests = build_requests(histogram, prompts, seed=seed, task=workload_for(row))
    t0 = time.perf_counter()
    config = server_config(
        row.max_num_seqs, scheduler=scheduler, record_features=record_features, prefix_caching=prefix_caching
    )
    off = _prefix_cache_refusal(requests, oracle, config) if prefix_caching else ""
    if off:
        config = replace(config, prefix_caching=False)
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
    return ReplayMetrics(sim, window, rule, len(requests), mean_in, wall, x, x_itl, moe, moe_itl, knees, off)


def _prefix_cache_refusal(requests: pd.DataFrame, oracle: Oracle, config: ServerConfig) -> str:
    """Why the engine would turn off the prefix cache `config`'s scheduler keeps for these requests'
    prompt blocks on this replica (`sim.engine.settings.prefix_cache_refusal`; '' where it would not)."""
    scheduler = type(config.make_scheduler())
    if not scheduler.prefix_caching or "hash_ids" not in requests.columns:
        return ""
    return prefix_cache_refusal(scheduler, replica_kv(oracle, config), block_tokens(requests))


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
    family: bool = False,
    prefix_caching: bool = True,
) -> Iterator[tuple[BenchmarkRow, Oracle, PromptLengths, ReplayMetrics]]:
    """Replay every row that has an oracle (`row_oracle`), a histogram (`row.hist_key`) and known
    prompts, yielding (row, its oracle, its prompts, what the replay measured). `prompts`: one
    distribution, one per gpu_model, a function of (row, oracle), or None (`task_prompts`: the
    task's fitted prompts, or each oracle's calibration prompts for LM Arena chat). Every skipped
    row is logged with the reason, once the rows are done, rows skipped for the same reason (and
    rows noted alike) in one line; the first data-parallel row replayed logs how it is approximated
    (`DATA_PARALLEL_NOTE`). `family`: every row with its GPU family's constants (`row_oracle`).
    `prefix_caching`: resent prompts hit the prefix cache where the engine can model it (where it
    cannot, such as a sliding-window model, the row is noted with the engine's reason)."""
    bar = _bar(len(rows), progress)
    noted_dp = False
    said = _Said()
    for row in rows:
        bar.update(1)
        what = row.label
        reason = unresolved_reason(row)
        if reason is not None:
            said.add("skipped", row, reason)
            continue
        if row.hist_key not in histograms:
            said.add("skipped", row, "no output-length histogram for this run")
            continue
        try:
            workload_for(row)
        except KeyError as e:
            said.add("skipped", row, e.args[0])
            continue
        oracle = row_oracle(row, family)
        try:
            chosen = prompts_for(prompts, row, oracle)
        except MissingPromptsError as e:
            said.add("skipped", row, str(e))
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
                prefix_caching=prefix_caching,
            )
        except EmptyWindowError as e:
            said.add("skipped", row, f"the simulated run has no steady-state window ({e})")
            continue
        if r.prefix_cache_off:
            said.add("note", row, f"replayed without prefix caching: {r.prefix_cache_off}")
        if r.window_rule != "max_num_seqs":
            said.add("note", row, f"simulated batch peaked below the cap; window opened by the {r.window_rule}")
        yield row, oracle, chosen, r
    bar.close()
    said.log(log)


class _Said:
    """What the replay says of rows (skipped, or a note), grouped by what is said: one line per
    reason, naming the row, or the rows by model, task and GPUs with their caps."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], list[BenchmarkRow]] = {}

    def add(self, kind: str, row: BenchmarkRow, reason: str) -> None:
        self.rows.setdefault((kind, reason), []).append(row)

    def log(self, log: Callable[[str], None]) -> None:
        for (kind, reason), rows in self.rows.items():
            if len(rows) == 1:
                log(f"{kind} {rows[0].label}: {reason}")
                continue
            caps: dict[str, list[int]] = {}
            for r in rows:
                caps.setdefault(r.label.rsplit(" at max_num_seqs ", 1)[0], []).append(r.max_num_seqs)
            runs = "; ".join(f"{what} at max_num_seqs {', '.join(map(str, sorted(c)))}" for what, c in caps.items())
            log(f"{kind} {len(rows)} rows, {reason}: {runs}")


def _bar(total: int, enabled: bool) -> Any:
    from sim.console.progress import progress_bar

    return progress_bar(enabled, total=total, unit="row", desc="replaying", leave=False)

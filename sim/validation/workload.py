"""The requests of one replayed benchmark run: all sent at t = 0, outputs drawn from the run's
measured histogram, prompts from an explicit, parameterised length distribution.

ML.ENERGY v3 (github.com/ml-energy/benchmark, commit c1d6557f) sends each task's prompts,
`num_request_repeats` times over, all at once (`request_rate = inf`); `TASKS` holds each task's
number of distinct prompts, output cap and `max-model-len` (LM Arena chat: 1024 prompts, outputs
up to 4096 tokens, 20480; GPQA Diamond: 198 questions, reasoning outputs up to 32768, 40960;
Sourcegraph FIM: 1024, 2048, 20480). The prompt lengths are not published: `PromptLengths` is a
fitted quantity (LM Arena chat: `sim.validation.calibrate`, recorded in each shipped oracle's
provenance; the other tasks: `sim.validation.prompts`, oracle/data/task_prompts.csv).

A resent prompt is the same prompt: the benchmark's vLLM (v0.11.1, automatic prefix caching on by
default, not switched off by any of its configs) finds its KV blocks cached while an earlier copy's
are, prefills only the rest and holds the shared blocks once. So each request names its prompt's
full blocks of `PREFIX_BLOCK_TOKENS` (`hash_ids`, as a Mooncake trace does): the same names for
every copy of a prompt, none shared between distinct prompts (distinct GPQA questions, LM Arena
conversations or FIM files share at most the chat template's first few tokens, under one block).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from sim.validation.table import OutputHistogram

MAX_MODEL_LEN = 20480  # tokens, prompt + output (benchmark's vLLM `max-model-len`)
MAX_OUTPUT_TOKENS = 4096  # benchmark's `--max-output-tokens`
UNIQUE_PROMPTS = 1024  # benchmark's `--workload.num-requests`; repeats resend the same prompts
PREFIX_BLOCK_TOKENS = 16  # vLLM's default KV block (tokens): the unit its prefix cache shares
_BLOCK_BITS = 20  # a block's name: its prompt's index << _BLOCK_BITS | its index in the prompt
PROMPT_KINDS = ("lognormal", "constant")
TASK_PROMPTS_FILE = "data/task_prompts.csv"  # in package `oracle`; written by `python -m sim.validation.prompts`
TASK_PROMPTS_COLUMNS = ("task", "prompt_mean_tokens", "prompt_sigma", "rows_used", "score_pct", "how")


@dataclass(frozen=True)
class TaskWorkload:
    """A benchmark task's request facts: distinct prompts (`--workload.num-requests`), the output
    cap (`--max-output-tokens`) and vLLM's `max-model-len` (prompt + output, tokens)."""

    name: str
    unique_prompts: int
    max_output_tokens: int
    max_model_len: int


# github.com/ml-energy/benchmark configs/vllm/<task>/benchmark.yaml and monolithic.config.yaml; the
# output caps agree with the last bin edge of every published histogram of the task.
TASKS = {
    t.name: t
    for t in (
        TaskWorkload("lm-arena-chat", UNIQUE_PROMPTS, MAX_OUTPUT_TOKENS, MAX_MODEL_LEN),
        TaskWorkload("gpqa", 198, 32768, 40960),
        TaskWorkload("sourcegraph-fim", 1024, 2048, MAX_MODEL_LEN),
    )
}
DEFAULT_WORKLOAD = TASKS["lm-arena-chat"]


@dataclass(frozen=True)
class PromptLengths:
    """Prompt-length distribution (tokens): 'lognormal' with mean `mean_tokens` and log-space
    standard deviation `sigma`, or 'constant' at `mean_tokens`."""

    kind: str = "lognormal"
    mean_tokens: float = 880.0
    sigma: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in PROMPT_KINDS:
            raise ValueError(f"prompt kind must be one of {PROMPT_KINDS}, got {self.kind!r}")
        if not self.mean_tokens >= 1:
            raise ValueError(f"prompt mean_tokens must be ≥ 1, got {self.mean_tokens}")
        if not self.sigma >= 0:
            raise ValueError(f"prompt sigma must be ≥ 0, got {self.sigma}")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` prompt lengths (float tokens, before clipping and rounding)."""
        if self.kind == "constant":
            return np.full(n, float(self.mean_tokens))
        mu = np.log(self.mean_tokens) - self.sigma**2 / 2.0  # E[exp(N(mu, σ²))] = mean_tokens
        return rng.lognormal(mu, self.sigma, size=n)


def sample_output_lengths(
    hist: OutputHistogram, n: int, rng: np.random.Generator, max_tokens: int = MAX_OUTPUT_TOKENS
) -> np.ndarray:
    """`n` output lengths (tokens), stratified: bins get requests in proportion to their counts
    (largest remainder; exactly the measured counts when n is the histogram's total), each value
    uniform within its bin [lo, hi), rounded, clipped to [1, max_tokens], in random order. Stratifying
    keeps the drawn mean within a token of the histogram's (plain draws of 1024 vary by ±3 %)."""
    share = hist.count * (n / hist.total)
    per_bin = np.floor(share).astype(np.int64)
    short = n - int(per_bin.sum())
    per_bin[np.argsort(-(share - per_bin), kind="stable")[:short]] += 1
    bins = rng.permutation(np.repeat(np.arange(per_bin.size), per_bin))
    u = rng.uniform(hist.lo[bins], hist.hi[bins])
    return np.clip(np.rint(u), 1, max_tokens).astype(np.int64)


def build_requests(
    hist: OutputHistogram,
    prompts: PromptLengths,
    *,
    seed: int = 0,
    n_requests: int | None = None,
    task: TaskWorkload = DEFAULT_WORKLOAD,
) -> pd.DataFrame:
    """Requests (arrival_s = 0, n_in, n_out, hash_ids) of one run of `task`; `n_requests`
    defaults to the histogram's total (the run's prompts × num_request_repeats). The task's
    distinct prompts repeat in order; every request draws its own output length (at most the task's
    output cap); a prompt is clipped to [1, max_model_len − n_out]. `hash_ids` names the full
    `PREFIX_BLOCK_TOKENS`-token blocks of a request's prompt, the same for every copy of a prompt
    (`attrs["hash_block_tokens"]` says the block size)."""
    n = hist.total if n_requests is None else int(n_requests)
    if n < 1:
        raise ValueError(f"n_requests must be ≥ 1, got {n}")
    rng = np.random.default_rng(seed)
    n_out = sample_output_lengths(hist, n, rng, task.max_output_tokens)
    unique = prompts.sample(min(n, task.unique_prompts), rng)
    raw = np.resize(unique, n)
    n_in = np.clip(np.rint(raw), 1, task.max_model_len - n_out).astype(np.int64)
    prompt = np.arange(n) % unique.size
    hashes = [
        (p << _BLOCK_BITS) + np.arange(k, dtype=np.int64)
        for p, k in zip(prompt, n_in // PREFIX_BLOCK_TOKENS, strict=True)
    ]
    requests = pd.DataFrame({"arrival_s": np.zeros(n), "n_in": n_in, "n_out": n_out, "hash_ids": hashes})
    requests.attrs["hash_block_tokens"] = PREFIX_BLOCK_TOKENS
    return requests


@dataclass(frozen=True)
class TaskPrompts:
    """A task's line of task_prompts.csv: the lognormal prompts its rows are replayed with, or
    `prompts` None where they are each oracle's calibration prompts (LM Arena chat); the rows that
    chose it, their score (%) and how it was obtained."""

    task: str
    prompts: PromptLengths | None
    rows_used: int
    score_pct: float
    how: str


def task_prompts_file() -> Path:
    """The shipped task_prompts.csv."""
    return Path(str(resources.files("oracle").joinpath(TASK_PROMPTS_FILE)))


@functools.cache
def read_task_prompts(path: str | Path | None = None) -> dict[str, TaskPrompts]:
    """task_prompts.csv (default: the shipped one) per task; a blank mean means the oracle's
    calibration prompts. ValueError naming the file, column and row for a malformed file."""
    path = task_prompts_file() if path is None else Path(path)
    df = pd.read_csv(path)
    missing = [c for c in TASK_PROMPTS_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; required are {list(TASK_PROMPTS_COLUMNS)}")
    out = {}
    for i, line in df.iterrows():
        mean, sigma = float(line["prompt_mean_tokens"]), float(line["prompt_sigma"])
        try:
            prompts = None if math.isnan(mean) else PromptLengths("lognormal", mean, sigma)
        except ValueError as e:
            raise ValueError(f"{path}: row {i}: {e}") from None
        task = str(line["task"])
        out[task] = TaskPrompts(task, prompts, int(line["rows_used"]), float(line["score_pct"]), str(line["how"]))
    return out

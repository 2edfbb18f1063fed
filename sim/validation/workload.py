"""The requests of one replayed benchmark run: all sent at t = 0, outputs drawn from the run's
measured histogram, prompts from an explicit, parameterised length distribution.

ML.ENERGY v3 (github.com/ml-energy/benchmark, commit c1d6557f) sends 1024 LM Arena prompts,
`num_request_repeats` times over, all at once (`request_rate = inf`), with outputs capped at 4096
tokens and `max-model-len` 20480. The prompt lengths are not published: `PromptLengths` is a
fitted quantity (`sim.validation.calibrate`), recorded in each shipped oracle's provenance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.validation.table import OutputHistogram

MAX_MODEL_LEN = 20480  # tokens, prompt + output (benchmark's vLLM `max-model-len`)
MAX_OUTPUT_TOKENS = 4096  # benchmark's `--max-output-tokens`
UNIQUE_PROMPTS = 1024  # benchmark's `--workload.num-requests`; repeats resend the same prompts
PROMPT_KINDS = ("lognormal", "constant")


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


def sample_output_lengths(hist: OutputHistogram, n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` output lengths (tokens), stratified: bins get requests in proportion to their counts
    (largest remainder; exactly the measured counts when n is the histogram's total), each value
    uniform within its bin [lo, hi), rounded, clipped to [1, 4096], in random order. Stratifying
    keeps the drawn mean within a token of the histogram's (plain draws of 1024 vary by ±3 %)."""
    share = hist.count * (n / hist.total)
    per_bin = np.floor(share).astype(np.int64)
    short = n - int(per_bin.sum())
    per_bin[np.argsort(-(share - per_bin), kind="stable")[:short]] += 1
    bins = rng.permutation(np.repeat(np.arange(per_bin.size), per_bin))
    u = rng.uniform(hist.lo[bins], hist.hi[bins])
    return np.clip(np.rint(u), 1, MAX_OUTPUT_TOKENS).astype(np.int64)


def build_requests(
    hist: OutputHistogram,
    prompts: PromptLengths,
    *,
    seed: int = 0,
    n_requests: int | None = None,
) -> pd.DataFrame:
    """Requests (arrival_s = 0, n_in, n_out) of one run; `n_requests` defaults to the histogram's
    total (the run's 1024 × num_request_repeats). The 1024 prompts repeat in order; every request
    draws its own output length; a prompt is clipped to [1, 20480 − n_out]."""
    n = hist.total if n_requests is None else int(n_requests)
    if n < 1:
        raise ValueError(f"n_requests must be ≥ 1, got {n}")
    rng = np.random.default_rng(seed)
    n_out = sample_output_lengths(hist, n, rng)
    unique = prompts.sample(min(n, UNIQUE_PROMPTS), rng)
    raw = np.resize(unique, n)
    n_in = np.clip(np.rint(raw), 1, MAX_MODEL_LEN - n_out).astype(np.int64)
    return pd.DataFrame({"arrival_s": np.zeros(n), "n_in": n_in, "n_out": n_out})

"""`summarization`: prompts longer than a threshold are first summarised by a smaller model.

The summarization request (the original prompt in, summary_tokens out) runs on the summarizer's
own oracle, on a separate GPU (`placement: separate`, the default) or queued on the main server
(`placement: same`, which needs the summarizer to be the main model). Its energy and latency are
charged to the user's request; the main request then runs on the summary, a new prompt that keeps
none of the original's leading tokens (`kept_prefix` 0: no prefix-cache hits of its own prompt).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from oracle.model import Oracle, OracleFormatError
from sim.engine.jobs import ServerState
from sim.policies.base import (
    PLACEMENTS,
    Decision,
    Policy,
    PolicyContext,
    Request,
    Shaping,
    Summarizer,
)
from sim.schema import ConfigError, check


@dataclass(frozen=True)
class Config:
    """Prompts over min_input_tokens are summarised to summary_tokens by summarizer_oracle
    (a shipped name or a path; null: the main model)."""

    min_input_tokens: int = 2048
    summary_tokens: int = 256
    summarizer_oracle: str | None = "llama-3.2-1b_h100"
    placement: str = "separate"

    def __post_init__(self) -> None:
        check(
            self.summary_tokens >= 1,
            "policy.summary_tokens",
            f"must be ≥ 1, got {self.summary_tokens}",
        )
        check(
            self.min_input_tokens > self.summary_tokens,
            "policy.min_input_tokens",
            f"must be > policy.summary_tokens ({self.summary_tokens}), got {self.min_input_tokens}",
        )
        check(
            self.placement in PLACEMENTS,
            "policy.placement",
            f"must be one of {PLACEMENTS}, got {self.placement!r}",
        )


class Summarization(Policy):
    """Summarise long prompts first; the main request runs on the summary."""

    name = "summarization"

    def __init__(self, min_input_tokens: int, summary_tokens: int, summarizer: Summarizer) -> None:
        self.min_input_tokens, self.summary_tokens = int(min_input_tokens), int(summary_tokens)
        self.summarizer = summarizer

    def decide(self, request: Request, state: ServerState | None = None) -> Decision:
        if request.n_in <= self.min_input_tokens:
            return Decision(request.n_in, request.n_out, kept_prefix=request.n_in)
        return Decision(self.summary_tokens, request.n_out, self.summary_tokens, kept_prefix=0)

    def shape(self, n_in: ArrayLike, n_out: ArrayLike) -> Shaping:
        i = np.asarray(n_in, dtype=np.int64)
        long = i > self.min_input_tokens
        summary = np.where(long, self.summary_tokens, 0)
        return Shaping(
            np.where(long, self.summary_tokens, i),
            np.asarray(n_out, dtype=np.int64).copy(),
            summary,
            np.where(long, 0, i).astype(np.int64),  # a summary is a new prompt: none of the original's start
        )

    def describe(self) -> str:
        s = self.summarizer
        where = "" if s is None else f" by {s.oracle.name} ({s.placement})"
        return f"summarization (> {self.min_input_tokens} → {self.summary_tokens} tokens{where})"


def load_summarizer(config: Config, main: Oracle) -> Summarizer:
    """The summarizer's oracle; errors name policy.summarizer_oracle."""
    if config.summarizer_oracle is None:
        return Summarizer(main, config.placement)
    try:
        oracle = Oracle.load(config.summarizer_oracle)
    except (FileNotFoundError, OracleFormatError) as e:
        raise ConfigError(f"policy.summarizer_oracle: {e}") from e
    if config.placement == "same" and oracle.name != main.name:
        raise ConfigError(
            f"policy.placement=same runs the summarizer on the main server, so "
            f"policy.summarizer_oracle must be the main model ({main.name!r}) or null, "
            f"got {config.summarizer_oracle!r}"
        )
    return Summarizer(oracle, config.placement)


def build(config: Config, context: PolicyContext) -> Summarization:
    return Summarization(config.min_input_tokens, config.summary_tokens, load_summarizer(config, context.oracle))

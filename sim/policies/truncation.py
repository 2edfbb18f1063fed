"""`truncation`: cap each prompt at max_input_tokens, keeping its most recent tokens.

The default cap comes from the oracle's efficiency map: at the trace's median output length and
a typical batch, output tokens per joule fall as the prompt grows; the cap is the longest prompt
whose efficiency is still at least `efficiency_fraction` of the best (shortest-prompt) one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from oracle.model import Oracle
from sim.config import check
from sim.jobs import ServerState
from sim.policies.base import Decision, Policy, PolicyContext, Request, Shaping


@dataclass(frozen=True)
class Config:
    """max_input_tokens: the cap (null: from the efficiency map). The map is read at
    output_tokens (null: the trace's median n_out) and batch sequences per step."""

    max_input_tokens: int | None = None
    efficiency_fraction: float = 0.8
    output_tokens: int | None = None
    batch: int = 8

    def __post_init__(self) -> None:
        if self.max_input_tokens is not None:
            check(
                self.max_input_tokens >= 1,
                "policy.max_input_tokens",
                f"must be null or ≥ 1, got {self.max_input_tokens}",
            )
        check(
            0 < self.efficiency_fraction <= 1,
            "policy.efficiency_fraction",
            f"must be in (0, 1], got {self.efficiency_fraction}",
        )
        if self.output_tokens is not None:
            check(
                self.output_tokens >= 1,
                "policy.output_tokens",
                f"must be null or ≥ 1, got {self.output_tokens}",
            )
        check(self.batch >= 1, "policy.batch", f"must be ≥ 1, got {self.batch}")


def efficiency_cap(oracle: Oracle, n_out: int, batch: int, fraction: float) -> int:
    """Longest prompt (tokens, up to the calibrated maximum) whose tokens/J at (n_out, batch)
    stay ≥ fraction × the best over shorter prompts."""
    hi = int(oracle.calibrated.n_in[1])
    n = np.arange(1, hi + 1)
    eff = oracle.efficiency(n, n_out, batch, check_range=False)  # a scan from 1 token, outside on purpose
    below = np.flatnonzero(eff < fraction * np.maximum.accumulate(eff))
    return int(below[0]) if below.size else hi


class Truncation(Policy):
    """Keep the last `max_input_tokens` tokens of every prompt."""

    name = "truncation"

    def __init__(self, max_input_tokens: int) -> None:
        self.max_input_tokens = int(max_input_tokens)

    def decide(self, request: Request, state: ServerState | None = None) -> Decision:
        return Decision(min(request.n_in, self.max_input_tokens), request.n_out)

    def shape(self, n_in: ArrayLike, n_out: ArrayLike) -> Shaping:
        i = np.minimum(np.asarray(n_in, dtype=np.int64), self.max_input_tokens)
        return Shaping(i, np.asarray(n_out, dtype=np.int64).copy(), np.zeros_like(i))

    def describe(self) -> str:
        return f"truncation (max_input_tokens={self.max_input_tokens})"


def build(config: Config, context: PolicyContext) -> Truncation:
    """The configured cap, or the efficiency-map cap for this trace's median output."""
    if config.max_input_tokens is not None:
        return Truncation(config.max_input_tokens)
    n_out = config.output_tokens or max(int(np.median(context.n_out)), 1)
    return Truncation(efficiency_cap(context.oracle, n_out, config.batch, config.efficiency_fraction))

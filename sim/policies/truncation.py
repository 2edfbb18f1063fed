"""`truncation`: cap each prompt at max_input_tokens, keeping the part of it `keep` names.

A prompt of n > c tokens cut to the cap c keeps (`keep`): `suffix` (the default) its last c
tokens, the most recent ones; `prefix` its first c; `middle` its first c//2 and its last c − c//2
(the middle is dropped). Only `prefix` and `middle` keep the prompt's start (c and c//2 tokens of
it), so only they keep prefix-cache hits (`Decision.kept_prefix`); a `suffix` cut keeps none.
Prompts of at most c tokens are served whole.

The default cap comes from the oracle's efficiency map: at the trace's median output length and
a typical batch, output tokens per joule fall as the prompt grows; the cap is the longest prompt
whose efficiency is still at least `efficiency_fraction` of the best (shortest-prompt) one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from oracle.model import Oracle
from sim.engine.jobs import ServerState
from sim.policies.base import Decision, Policy, PolicyContext, Request, Shaping
from sim.schema import check

KEEPS = ("prefix", "suffix", "middle")
"""What a cut prompt keeps: its first tokens, its last ones, or both ends (`Config.keep`)."""


@dataclass(frozen=True)
class Config:
    """max_input_tokens: the cap (null: from the efficiency map). The map is read at
    output_tokens (null: the trace's median n_out) and batch sequences per step. keep: which
    part of a cut prompt is served, one of KEEPS."""

    max_input_tokens: int | None = None
    efficiency_fraction: float = 0.8
    output_tokens: int | None = None
    batch: int = 8
    keep: str = "suffix"

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
        check(self.keep in KEEPS, "policy.keep", f"must be one of {KEEPS}, got {self.keep!r}")


def efficiency_cap(oracle: Oracle, n_out: int, batch: int, fraction: float) -> int:
    """Longest prompt (tokens, up to the calibrated maximum) whose tokens/J at (n_out, batch)
    stay ≥ fraction × the best over shorter prompts."""
    hi = int(oracle.calibrated.n_in[1])
    n = np.arange(1, hi + 1)
    eff = oracle.efficiency(n, n_out, batch, check_range=False)  # a scan from 1 token, outside on purpose
    below = np.flatnonzero(eff < fraction * np.maximum.accumulate(eff))
    return int(below[0]) if below.size else hi


class Truncation(Policy):
    """Cut every prompt to its `max_input_tokens` tokens that `keep` names (`KEEPS`)."""

    name = "truncation"

    def __init__(self, max_input_tokens: int, keep: str = "suffix") -> None:
        if keep not in KEEPS:
            raise ValueError(f"keep must be one of {KEEPS}, got {keep!r}")
        self.max_input_tokens = int(max_input_tokens)
        self.keep = keep

    def _kept_of_cut(self) -> int:
        """Leading tokens of the original prompt a cut prompt keeps unchanged."""
        c = self.max_input_tokens
        return {"prefix": c, "middle": c // 2, "suffix": 0}[self.keep]

    def decide(self, request: Request, state: ServerState | None = None) -> Decision:
        if request.n_in <= self.max_input_tokens:
            return Decision(request.n_in, request.n_out, kept_prefix=request.n_in)
        return Decision(self.max_input_tokens, request.n_out, kept_prefix=self._kept_of_cut())

    def shape(self, n_in: ArrayLike, n_out: ArrayLike) -> Shaping:
        n = np.asarray(n_in, dtype=np.int64)
        i = np.minimum(n, self.max_input_tokens)
        kept = np.where(n > self.max_input_tokens, self._kept_of_cut(), n).astype(np.int64)
        return Shaping(i, np.asarray(n_out, dtype=np.int64).copy(), np.zeros_like(i), kept)

    def describe(self) -> str:
        return f"truncation (max_input_tokens={self.max_input_tokens}, keep={self.keep})"


def build(config: Config, context: PolicyContext) -> Truncation:
    """The configured cap, or the efficiency-map cap for this trace's median output."""
    if config.max_input_tokens is not None:
        return Truncation(config.max_input_tokens, config.keep)
    n_out = config.output_tokens or max(int(np.median(context.n_out)), 1)
    cap = efficiency_cap(context.oracle, n_out, config.batch, config.efficiency_fraction)
    return Truncation(cap, config.keep)

"""`adaptive_gen`: cap each request's output at factor × n_out*(n_in), the oracle's sweet spot.

n_out* minimises energy per output token for the request's prompt length. The cap is clamped to
[min_output_tokens, max_output_tokens]; with `queue_threshold` set, it is multiplied by
`queue_factor` for requests that arrive while at least that many requests wait (the policy then
reads the server state, so it runs through the dispatcher).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from oracle.model import Oracle
from sim.engine.jobs import ServerState
from sim.policies.base import Decision, Policy, PolicyContext, Request, Shaping
from sim.schema import check


@dataclass(frozen=True)
class Config:
    """factor × n_out*(n_in) clamped to [min, max] output tokens; optional queue tightening."""

    factor: float = 1.0
    min_output_tokens: int = 16
    max_output_tokens: int = 4096
    batch: int = 1
    queue_threshold: int | None = None
    queue_factor: float = 0.5

    def __post_init__(self) -> None:
        check(self.factor > 0, "policy.factor", f"must be > 0, got {self.factor}")
        check(
            self.min_output_tokens >= 1,
            "policy.min_output_tokens",
            f"must be ≥ 1, got {self.min_output_tokens}",
        )
        check(
            self.max_output_tokens >= self.min_output_tokens,
            "policy.max_output_tokens",
            f"must be ≥ policy.min_output_tokens ({self.min_output_tokens}), got {self.max_output_tokens}",
        )
        check(self.batch >= 1, "policy.batch", f"must be ≥ 1, got {self.batch}")
        if self.queue_threshold is not None:
            check(
                self.queue_threshold >= 0,
                "policy.queue_threshold",
                f"must be null or ≥ 0, got {self.queue_threshold}",
            )
        check(
            0 < self.queue_factor <= 1,
            "policy.queue_factor",
            f"must be in (0, 1], got {self.queue_factor}",
        )


class AdaptiveGen(Policy):
    """Cut outputs beyond the oracle's energy-optimal length."""

    name = "adaptive_gen"

    def __init__(self, oracle: Oracle, config: Config) -> None:
        self.oracle, self.config = oracle, config
        self.dynamic = config.queue_threshold is not None
        self._caps: dict[tuple[int, bool], int] = {}

    def caps(self, n_in: ArrayLike, tightened: bool = False) -> np.ndarray:
        """Output caps (tokens) for prompts of n_in tokens."""
        c = self.config
        star = self.oracle.optimal_output(np.asarray(n_in, dtype=float), c.batch, check_range=False)
        cap = np.clip(c.factor * star, c.min_output_tokens, c.max_output_tokens)
        if tightened:
            cap = np.maximum(cap * c.queue_factor, c.min_output_tokens)
        return np.floor(cap).astype(np.int64)

    def decide(self, request: Request, state: ServerState | None = None) -> Decision:
        t = self.config.queue_threshold
        tightened = state is not None and t is not None and state.queue_len >= t
        key = (request.n_in, tightened)
        if key not in self._caps:
            self._caps[key] = int(self.caps(request.n_in, tightened))
        return Decision(request.n_in, min(request.n_out, self._caps[key]))

    def shape(self, n_in: ArrayLike, n_out: ArrayLike) -> Shaping:
        i = np.asarray(n_in, dtype=np.int64).copy()
        o = np.minimum(np.asarray(n_out, dtype=np.int64), self.caps(i))
        return Shaping(i, o, np.zeros_like(i))

    def describe(self) -> str:
        c = self.config
        tight = "" if c.queue_threshold is None else f", ×{c.queue_factor} at queue ≥ {c.queue_threshold}"
        bounds = f"[{c.min_output_tokens}, {c.max_output_tokens}]"
        return f"adaptive_gen ({c.factor}× n_out*, {bounds}{tight})"


def build(config: Config, context: PolicyContext) -> AdaptiveGen:
    """Caps come from the main model's oracle."""
    return AdaptiveGen(context.oracle, config)

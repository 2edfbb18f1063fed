"""What every request-shaping policy is: a plain object mapping a request to a decision.

A policy sees one request (and, if it is `dynamic`, a snapshot of the server when the request
arrives) and returns the lengths to serve and whether to summarise the prompt first. The quality
cost is what the decision removed: input tokens dropped, output tokens cut. A policy that changes
the prompt also says how many of its original leading tokens the served prompt keeps as they were
(`kept_prefix`): only those can hit the engine's prefix cache (`sim.engine.prefix`). No SimPy here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from oracle.model import Oracle
from sim.engine.jobs import ServerState

PLACEMENTS = ("separate", "same")


@dataclass(frozen=True)
class Request:
    """One request as the trace gives it (s, tokens)."""

    arrival_s: float
    n_in: int
    n_out: int


@dataclass(frozen=True)
class Decision:
    """Lengths to serve (tokens); summary_tokens > 0: summarise the prompt to that many first.
    kept_prefix: leading tokens of the original prompt the served one keeps unchanged (None: the
    served prompt is the original's start, all n_in of them)."""

    n_in: int
    n_out: int
    summary_tokens: int = 0
    kept_prefix: int | None = None


@dataclass(frozen=True)
class Shaping:
    """Decisions for a whole trace, as arrays (tokens). kept_prefix (int64): leading tokens of
    each original prompt the served one keeps unchanged (None: all of the served n_in)."""

    n_in: np.ndarray
    n_out: np.ndarray
    summary_tokens: np.ndarray
    kept_prefix: np.ndarray | None = None


@dataclass(frozen=True)
class Summarizer:
    """The model that summarises prompts, and where it runs ('separate' GPU or the 'same' one)."""

    oracle: Oracle
    placement: str = "separate"


@dataclass(frozen=True)
class PolicyContext:
    """What a policy may be built from: the main model's oracle and the trace's lengths."""

    oracle: Oracle
    n_in: np.ndarray
    n_out: np.ndarray


class Policy:
    """The baseline: serve every request as it is. Subclasses override `decide`.

    `dynamic` policies read the server state at arrival (they run through a dispatcher);
    static ones are applied to the whole trace at once with `shape`, which subclasses may
    vectorise. `summarizer` is set by policies that add summarization requests.
    """

    name = "none"
    dynamic = False
    summarizer: Summarizer | None = None

    def decide(self, request: Request, state: ServerState | None = None) -> Decision:
        """The lengths to serve for one request."""
        return Decision(request.n_in, request.n_out)

    def shape(self, n_in: ArrayLike, n_out: ArrayLike) -> Shaping:
        """Decisions for every request of a trace, ignoring server state."""
        if type(self).decide is Policy.decide:  # serves every request as asked: no per-request objects
            return unshaped(n_in, n_out)
        decisions = [
            self.decide(Request(0.0, int(i), int(o)))
            for i, o in zip(np.asarray(n_in).tolist(), np.asarray(n_out).tolist(), strict=True)
        ]
        kept = None
        if any(d.kept_prefix is not None for d in decisions):
            kept = np.array([d.n_in if d.kept_prefix is None else d.kept_prefix for d in decisions], dtype=np.int64)
        return Shaping(
            np.array([d.n_in for d in decisions], dtype=np.int64),
            np.array([d.n_out for d in decisions], dtype=np.int64),
            np.array([d.summary_tokens for d in decisions], dtype=np.int64),
            kept,
        )

    def describe(self) -> str:
        """One line for logs and the console table."""
        return self.name


def unshaped(n_in: ArrayLike, n_out: ArrayLike) -> Shaping:
    """The identity shaping (int64 copies, no summaries)."""
    i = np.asarray(n_in, dtype=np.int64).copy()
    return Shaping(i, np.asarray(n_out, dtype=np.int64).copy(), np.zeros_like(i))

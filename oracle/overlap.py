"""The prefill overlap in a fit: how many of a run's prompt tokens lie below a knee.

A step prefilling n prompt tokens reads its weights (W, s) while it computes them (c, s a token),
so it costs W + c·n − min(W, c·n) = W + c·max(0, n − n*), with the knee n* = W / c
(`oracle.model.Overlap`). Summed over a run's steps the compute term is c·(N − S(n*)), N the
prompt tokens and S(k) = Σ_steps min(n_step, k). The knee moves with the fitted constants, so a
replayed window records S at the knees `KNEES` (`sim.validation.calibrate`) and a fit reads it
between them; a single step (a median-ITL step, a measured kernel) keeps its tokens and is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KNEES = 2.0 ** np.arange(0.0, 16.25, 0.25)
"""Knees (tokens) at which a replayed window records S: 1 to 65,536, four a doubling."""
KNEE_COLUMNS = [f"s_knee_{i}" for i in range(KNEES.size)]
"""The replay features' columns of S at each knee (per output token)."""


def below_knees(tokens_per_step: np.ndarray, steps: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """S at every knee: Σ weight · steps · min(tokens per step, knee) over spans of `steps` steps
    of `tokens_per_step` prompt tokens each, each span counted `weights` times (shape `KNEES`)."""
    per_span = np.minimum(np.asarray(tokens_per_step, dtype=float)[:, None], KNEES[None, :])
    return (np.asarray(weights, dtype=float) * np.asarray(steps, dtype=float)) @ per_span


@dataclass(frozen=True)
class PromptSteps:
    """Rows of prompt steps: each row a window's S at the knees (`grid`, its `tokens` NaN) or one
    step of `tokens` prompt tokens (its `grid` row zero)."""

    grid: np.ndarray
    tokens: np.ndarray

    @classmethod
    def of_steps(cls, tokens: np.ndarray) -> PromptSteps:
        """One step a row, of `tokens` prompt tokens."""
        t = np.asarray(tokens, dtype=float)
        return cls(np.zeros((t.size, KNEES.size)), t)

    @classmethod
    def of_grid(cls, grid: np.ndarray) -> PromptSteps:
        """Windows with S at the knees (rows × `KNEES`)."""
        g = np.asarray(grid, dtype=float)
        if g.ndim != 2 or g.shape[1] != KNEES.size:
            raise ValueError(f"a knee grid has {KNEES.size} columns a row, got shape {g.shape}")
        return cls(g, np.full(len(g), np.nan))

    @classmethod
    def concat(cls, *parts: PromptSteps) -> PromptSteps:
        """The rows of `parts`, in order."""
        return cls(np.vstack([p.grid for p in parts]), np.concatenate([p.tokens for p in parts]))

    def take(self, rows: np.ndarray) -> PromptSteps:
        """The rows at positions `rows`."""
        return PromptSteps(self.grid[rows], self.tokens[rows])

    def below(self, knee: np.ndarray) -> np.ndarray:
        """S(knee) of each row (tokens; `knee` one a row): exact for single steps, linear between
        the knees for windows (S is 0 at 0 and flat past the largest prompt step)."""
        k = np.asarray(knee, dtype=float)
        rows = np.arange(len(self.tokens))
        i = np.clip(np.searchsorted(KNEES, k, side="right") - 1, 0, KNEES.size - 2)
        lo, hi = KNEES[i], KNEES[i + 1]
        frac = np.clip((k - lo) / (hi - lo), 0.0, 1.0)
        grid = self.grid[rows, i] * (1.0 - frac) + self.grid[rows, i + 1] * frac
        grid = np.where(k < KNEES[0], self.grid[:, 0] * np.maximum(k, 0.0) / KNEES[0], grid)
        return np.where(np.isnan(self.tokens), grid, np.minimum(np.nan_to_num(self.tokens), k))

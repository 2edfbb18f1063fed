"""Seeded random prompts of exact token lengths (token ids, no tokenizer)."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np


def point_rng(seed: int, *keys: int) -> np.random.Generator:
    """A generator that depends only on the base seed and the point's keys (stable across reruns)."""
    return np.random.default_rng([seed, *keys])


def make_prompts(
    count: int,
    n_in: int,
    vocab_size: int,
    rng: np.random.Generator,
    exclude: Collection[int] = (),
) -> list[list[int]]:
    """`count` prompts of exactly `n_in` token ids drawn uniformly from the vocabulary.

    Special tokens (`exclude`, e.g. BOS/EOS/PAD) are never drawn, so no prompt ends early or pads.
    """
    allowed = np.setdiff1d(np.arange(vocab_size), np.fromiter(exclude, dtype=np.int64))
    if allowed.size == 0:
        raise ValueError(f"no token ids left to draw from a vocabulary of {vocab_size}")
    ids = rng.choice(allowed, size=(count, n_in))
    return ids.tolist()

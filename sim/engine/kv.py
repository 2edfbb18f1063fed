"""KV-cache layout of one replica: its capacity and what a sequence holds, in integer units.

A unit is one block (`block_size` tokens) of one layer's keys and values; without sliding-window
layers a unit is one block of every layer. A sequence of c tokens holds

    full_units · ⌈c / block⌉ + window_units · min(⌈c / block⌉, window_blocks)

units: full-attention layers keep every token, sliding-window layers (Gemma 2/3 local layers,
Mistral) keep at most the blocks that cover their window, as vLLM's sliding-window manager does
(⌈(W − 1) / block⌉ + 1 blocks). A hybrid Mamba-Transformer's sequence also holds `state_units`
from its first token to its last, whatever its length (its Mamba layers' recurrent state). How many
units a replica holds: `sim.engine.kv_sizing`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike


@dataclass(frozen=True)
class KvLayout:
    """Block size (tokens), units per block of full and of windowed layers, window (blocks), capacity
    (units), units of state every sequence holds."""

    block_size: int
    full_units: int
    window_units: int
    window_blocks: int
    capacity_units: int
    state_units: int = 0

    def __post_init__(self) -> None:
        if (
            self.block_size < 1
            or self.full_units < 0
            or self.window_units < 0
            or self.full_units + self.window_units < 1
            or self.state_units < 0
        ):
            raise ValueError(f"invalid KV layout {self}")

    @property
    def units_per_block(self) -> int:
        """Units one block of a short sequence takes (every layer)."""
        return self.full_units + self.window_units

    @property
    def state_tokens(self) -> int:
        """Tokens of full-length KV that take as much of the cache as one sequence's state."""
        return -(-self.state_units // self.units_per_block) * self.block_size

    @property
    def capacity_tokens(self) -> int:
        """Tokens of full-length KV the cache holds (units over the units of one token's block)."""
        return self.capacity_units // self.units_per_block * self.block_size

    def units(self, tokens: int) -> int:
        """Units held by a sequence with KV for `tokens` tokens."""
        blocks = -(-tokens // self.block_size)
        state = self.state_units if tokens > 0 else 0
        return state + self.full_units * blocks + self.window_units * min(blocks, self.window_blocks)

    def units_of(self, tokens: ArrayLike) -> np.ndarray:
        """`units` of many token counts at once (an array of them)."""
        tokens = np.asarray(tokens)
        blocks = -(-tokens // self.block_size)
        state = np.where(tokens > 0, self.state_units, 0)
        return state + self.full_units * blocks + self.window_units * np.minimum(blocks, self.window_blocks)

    def units_fn(self) -> Callable[[int], int]:
        """`units` as the cheapest function for this layout (the engine calls it per admission)."""
        bs, full = self.block_size, self.full_units
        if self.window_units == 0 and self.state_units == 0:
            return lambda tokens: -(-tokens // bs) * full
        return self.units

    def max_tokens(self, units: int) -> int:
        """Most tokens whose KV fits in `units` units (2**62: any length fits)."""
        if self.full_units == 0 and self.units(1 << 62) <= units:
            return 1 << 62
        lo, hi = 0, (units + 1) * self.block_size  # units(hi) > units
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.units(mid) <= units:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def tokens(self, units: int) -> int:
        """Tokens of full-length KV that `units` hold (rounded down to blocks)."""
        return units // self.units_per_block * self.block_size

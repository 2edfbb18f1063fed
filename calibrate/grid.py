"""Calibration grids: which (n_in, n_out, batch cap, request count, GPU setting) points to measure."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass


class GridError(ValueError):
    """A grid that cannot be measured; the message names the field and the bad value."""


@dataclass(frozen=True)
class GpuSettings:
    """Optional DVFS / power-capping settings: a locked SM clock (MHz) and a power limit (W).

    None means "leave the GPU's default".
    """

    clock_mhz: int | None = None
    power_limit_w: float | None = None

    @property
    def is_default(self) -> bool:
        return self.clock_mhz is None and self.power_limit_w is None


@dataclass(frozen=True)
class GridPoint:
    """One configuration: `num_requests` prompts of `n_in` tokens, each generating `n_out` tokens."""

    n_in: int
    n_out: int
    batch_size: int
    num_requests: int
    settings: GpuSettings = GpuSettings()

    @property
    def max_seq_len(self) -> int:
        return self.n_in + self.n_out


@dataclass(frozen=True)
class Grid:
    """A sweep over the product of its value lists, with `repeats` measurements per point.

    Points are ordered GPU setting, batch cap, request count, n_in, n_out (outermost first), so an
    engine is rebuilt and a GPU setting changed as rarely as possible. `max_num_tokens` is the
    engine's token budget per step (None: the engine's default).
    """

    name: str
    n_in: tuple[int, ...]
    n_out: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    num_requests: tuple[int, ...]
    clocks_mhz: tuple[int | None, ...] = (None,)
    power_limits_w: tuple[float | None, ...] = (None,)
    repeats: int = 3
    warmup: int = 1
    max_num_tokens: int | None = None

    def __post_init__(self) -> None:
        for field in ("n_in", "n_out", "batch_sizes", "num_requests"):
            _check_positive_list(field, getattr(self, field))
        for field in ("clocks_mhz", "power_limits_w"):
            _check_optional_list(field, getattr(self, field))
        if self.repeats < 1:
            raise GridError(f"grid {self.name!r}: repeats must be >= 1, got {self.repeats}")
        if self.warmup < 0:
            raise GridError(f"grid {self.name!r}: warmup must be >= 0, got {self.warmup}")
        if self.max_num_tokens is not None and self.max_num_tokens < 1:
            raise GridError(f"grid {self.name!r}: max_num_tokens must be >= 1, got {self.max_num_tokens}")

    @property
    def max_seq_len(self) -> int:
        """The longest sequence (prompt + output) of the grid, in tokens."""
        return max(self.n_in) + max(self.n_out)

    @property
    def settings(self) -> list[GpuSettings]:
        return [GpuSettings(c, p) for c, p in itertools.product(self.clocks_mhz, self.power_limits_w)]

    def points(self) -> list[GridPoint]:
        """Every grid point, in measurement order (repeats not expanded)."""
        loops = itertools.product(self.settings, self.batch_sizes, self.num_requests, self.n_in, self.n_out)
        return [GridPoint(i, o, b, r, s) for s, b, r, i, o in loops]


def _check_positive_list(field: str, values: Sequence[int]) -> None:
    if not values:
        raise GridError(f"grid field {field!r} is empty; give at least one value")
    bad = [v for v in values if not isinstance(v, int) or v < 1]
    if bad:
        raise GridError(f"grid field {field!r} has values that are not positive integers: {bad}")


def _check_optional_list(field: str, values: Sequence[float | None]) -> None:
    if not values:
        raise GridError(f"grid field {field!r} is empty; use [null] for the GPU's default")
    bad = [v for v in values if v is not None and v <= 0]
    if bad:
        raise GridError(f"grid field {field!r} has values that are not positive: {bad}")

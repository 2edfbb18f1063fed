"""`none`: the unshaped baseline every other policy is compared with."""

from __future__ import annotations

from dataclasses import dataclass

from numpy.typing import ArrayLike

from sim.policies.base import Policy, PolicyContext, Shaping, unshaped


@dataclass(frozen=True)
class Config:
    """No parameters."""


class NoPolicy(Policy):
    """Serve every request as the trace gives it."""

    name = "none"

    def shape(self, n_in: ArrayLike, n_out: ArrayLike) -> Shaping:
        return unshaped(n_in, n_out)


def build(config: Config, context: PolicyContext) -> NoPolicy:
    """The baseline needs nothing from the context."""
    return NoPolicy()

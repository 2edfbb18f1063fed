"""The warnings a run gives once, at its end: requests no server could ever serve (by reason),
and decode steps that no SM clock kept within the clock controller's budget."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from sim.engine.jobs import REJECT_REASONS
from sim.engine.ledger import ServerStats
from sim.serving.server import Server


class RejectedRequestsWarning(UserWarning):
    """Requests of a run that no server could ever serve."""


def warn_rejected(reason: np.ndarray, stacklevel: int = 3) -> None:
    """One warning per run with the count of rejected requests by reason, from their REJECT_* codes
    (the records keep each one's)."""
    counts = np.bincount(reason, minlength=len(REJECT_REASONS))[1:]
    if not counts.any():
        return
    order = sorted(np.flatnonzero(counts), key=lambda k: -counts[k])
    parts = "; ".join(f"{counts[k]:,} {REJECT_REASONS[int(k) + 1]}" for k in order)
    warnings.warn(
        f"{int(counts.sum()):,} of {reason.size:,} requests were rejected, never served: {parts} "
        "(the records' reject_reason column names each one; a bigger GPU, a larger server.kv_memory_fraction, "
        "server.chunked_prefill=true or a shaping policy serves them)",
        RejectedRequestsWarning,
        stacklevel=stacklevel,
    )


class ClockBudgetWarning(UserWarning):
    """Steps of a run that no SM clock keeps within the clock controller's budget."""


def warn_missed_budget(stats: Sequence[ServerStats], servers: Sequence[Server]) -> None:
    """One warning per run with the decode steps slower than the clock controller's budget even at
    full clock (`gpu.clock_policy=slo`): those ran at full clock, saving nothing."""
    missed, steps = sum(s.missed_budget_steps for s in stats), sum(s.steps for s in stats)
    if not missed:
        return
    budgets = sorted({s.costs.step_budget_s for s in servers if s.costs.step_budget_s > 0})
    warnings.warn(
        f"{missed:,} decode steps ({100 * missed / max(steps, 1):.1f} % of {steps:,} steps) took longer than the clock "
        f"controller's step budget ({', '.join(f'{1000 * b:g} ms' for b in budgets)}: gpu.slo_headroom × "
        "slo.tpot_s) even at full clock, so no clock met it and they ran at full clock (summary.json: "
        "clock_budget_missed_steps); a larger gpu.slo_headroom or slo.tpot_s, or a smaller batch, lets the "
        "controller act there",
        ClockBudgetWarning,
        stacklevel=3,
    )

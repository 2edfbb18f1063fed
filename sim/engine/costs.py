"""Energy and time math of serving steps, as pure functions (no SimPy, no state).

A step's time (s) and energy (J) are linear in its features (`oracle.features.FEATURES`):
`[const, decode_seqs, decode_ctx, prefill_seqs, prefill_tokens, prefill_attn]`. Between two
events that change the batch, B decoding sequences advance together and their context sum grows
by B per step, so the time and energy of k steps are arithmetic series (`sim.kernel.linear.span`). The per-sequence
part of a request's energy depends only on its own lengths (`sequence_energy_j`); the shared
`const` part is split equally between the sequences of each step, which the engine tracks as a
running sum of 1/(sequences in the step) (`share`).

The closed forms of decode spans under a power cap (`span_s`, `decode`, `steps_to_reach`) are
compiled once, in `sim.kernel.costs`; `StepCosts` calls them. What stays here: one step's cost
under a cap tried clock by clock (`StepCosts.step`, the step-by-step reference's), and the
per-request charges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from oracle.clocks import ClockError, clock_spec_of, ladder
from oracle.features import StepCoef
from oracle.model import ExpertReads, Oracle, Overlap, with_reads
from sim.kernel import costs as kernel_costs
from sim.kernel import levels, linear

Array = NDArray[np.float64]


@dataclass(frozen=True)
class StepCosts:
    """Step coefficients of one (model, GPU) by feature name: s and J per unit, idle power (W),
    the power limit (W; None: no cap) at which the GPU throttles a step, and the coefficients at
    the clocks it can throttle to (`ladder_t` s, `ladder_e` J: levels × 11 in the kernel's layout,
    `sim.kernel.linear.COLUMNS`: the six coefficients, then a mixture of experts' reads, the
    prefill overlap, the experts' untouched chance and the level's SM clock, `ladder_mhz`, MHz, 0
    where unknown; row 0 these ones; `oracle.clocks.ladder`). Without a ladder (one row) a
    throttled step lasts energy / cap.
    `step_budget_s`: an SLO-aware frequency controller runs each step at the lowest clock that
    keeps it within this time (s; 0: none; the oracle's `step_budget_s` setting); `switch_s`: its
    clock-switch latency (s; 0: it switches at every step; the oracle's `clock_switch_s`), during
    which it holds the clock it set (`sim.kernel.levels.hold`); `experts`: the
    oracle's expert reads (`Oracle.experts`); `overlap`: its prefill overlap (`Oracle.overlap`)."""

    time_s: StepCoef
    energy_j: StepCoef
    idle_power_w: float
    power_limit_w: float | None = None
    ladder_t: np.ndarray | None = field(default=None, repr=False, compare=False)
    ladder_e: np.ndarray | None = field(default=None, repr=False, compare=False)
    step_budget_s: float = 0.0  # a frequency controller's step-time budget (s; 0: none)
    experts: ExpertReads | None = None  # a mixture of experts' reads (`Oracle.experts`)
    overlap: Overlap | None = None  # what a prefill step hides (`Oracle.overlap`)
    ladder_mhz: np.ndarray | None = field(default=None, repr=False, compare=False)  # each level's clock (MHz)
    switch_s: float = 0.0  # the controller's clock-switch latency (s; 0: it switches at every step)

    def __post_init__(self) -> None:
        x = self.experts
        if self.ladder_t is None or self.ladder_e is None:
            t, e = with_reads(self.time_s, self.energy_j, x, self.overlap)
            object.__setattr__(self, "ladder_t", t[None, :])
            object.__setattr__(self, "ladder_e", e[None, :])
        if x is not None and x.energy_j > 0.0 and not self.energy_j.const > 0.0:
            raise ValueError("an oracle with expert reads needs a positive constant step energy to share them by")
        log_untouched = 0.0 if x is None else math.log(x.untouched)  # the kernel's rows: `linear.COLUMNS`
        n_levels = len(np.asarray(self.ladder_t))  # (not `levels`: the module sim.kernel.levels)
        mhz = np.zeros(n_levels) if self.ladder_mhz is None else np.asarray(self.ladder_mhz, dtype=float)
        if mhz.shape != (n_levels,):
            raise ValueError(f"ladder_mhz needs one clock per ladder level ({n_levels}), got shape {mhz.shape}")
        for name in ("ladder_t", "ladder_e"):
            rows = np.asarray(getattr(self, name), dtype=float)
            if rows.shape[1] == linear.LOG_UNTOUCHED:
                rows = np.column_stack([rows, np.full(len(rows), log_untouched)])
            if rows.shape[1] == linear.CLOCK:
                rows = np.column_stack([rows, mhz])
            object.__setattr__(self, name, np.ascontiguousarray(rows))

    @classmethod
    def from_oracle(cls, oracle: Oracle) -> StepCosts:
        """Plain-float copy of an oracle's step model, with its clock ladder under a power cap
        (none for a GPU without clock parameters, or coefficients without a constant energy to
        split a clock's saving by) and the SM clock of each level (0 where unknown)."""
        limit = None if oracle.power_limit_w is None else float(oracle.power_limit_w)
        budget = float(oracle.settings.get("step_budget_s", 0.0))
        ladder_t = ladder_e = None
        try:
            mhz = np.array([float(oracle.settings.get("clock_mhz", clock_spec_of(oracle).max_mhz))])
            if (limit is not None or budget > 0.0) and oracle.energy_coef_j[0] > 0.0:
                mhz, ladder_t, ladder_e = ladder(oracle)
        except ClockError:
            mhz = np.zeros(1)
        return cls(
            StepCoef.of(oracle.time_coef_s),
            StepCoef.of(oracle.energy_coef_j),
            float(oracle.idle_power_w),
            limit,
            ladder_t,
            ladder_e,
            budget,
            oracle.experts,
            oracle.overlap,
            mhz,
            float(oracle.settings.get("clock_switch_s", 0.0)),
        )

    @property
    def time_row(self) -> np.ndarray:
        """The time coefficients (s) as an array: the clock ladder's row 0 (what compiled code reads)."""
        assert self.ladder_t is not None  # set by __post_init__
        return self.ladder_t[0]

    @property
    def _cap(self) -> float:
        return float(self.power_limit_w or 0.0)  # W; 0: no cap

    def budget_for(self, queue_len: int) -> float:
        """The controller's step budget (s) for a step or span that starts with `queue_len`
        requests waiting: `step_budget_s` while none waits, none (full clock) while some do
        (`sim.kernel.levels.budget`)."""
        return self.step_budget_s if queue_len == 0 else 0.0

    def step(
        self,
        decode_seqs: int,
        decode_ctx: int,
        prefill_seqs: int,
        tokens: int,
        attn: int,
        budget_s: float = 0.0,
        floor: int = -1,
    ) -> tuple[float, float, float, float]:
        """Time (s), energy (J), `extra` (energy a lower clock saved, in step constants) and SM
        clock (MHz) of one step with these summed features, the reference's way, clock by clock:
        the highest clock whose power fits the cap, then, under a controller's budget, the lowest
        whose time fits it; held at ladder level `floor` (≥ 0), that clock or the highest below it
        whose power fits the cap (`sim.kernel.costs.step` does the same)."""
        lt, le, cap, tau = self.ladder_t, self.ladder_e, self._cap, budget_s
        assert lt is not None and le is not None
        x = (decode_seqs, decode_ctx, prefill_seqs, tokens, attn)
        de, dt = _step_value(le[0], *x), _step_value(lt[0], *x)
        apart = _experts_value(le[0], decode_seqs + tokens) - _hidden_value(le[0], tokens)  # shared, beside c0
        shared = apart / float(le[0, 0]) if apart != 0.0 else 0.0  # in step constants
        clock = float(lt[0, linear.CLOCK])
        over = cap > 0.0 and de > cap * dt
        if not over and (floor == 0 or (floor < 0 and (tau <= 0.0 or dt > tau))):
            return dt, de, shared, clock
        if len(lt) == 1:
            return (de / cap if over else dt), de, shared, clock
        level, last = max(floor, 0), len(lt) - 1
        if over or floor > 0:
            level = max(level, 1)
            while level < last and cap > 0.0 and _step_value(le[level], *x) > cap * _step_value(lt[level], *x):
                level += 1
        if tau > 0.0 and floor < 0:
            while level < last and _step_value(lt[level + 1], *x) <= tau:
                level += 1
        if level == 0:
            return dt, de, shared, clock
        e = _step_value(le[level], *x)
        return _step_value(lt[level], *x), e, (e - de + apart) / float(le[0, 0]), float(lt[level, linear.CLOCK])

    def span_s(self, batch: int, ctx_sum: int, steps: int, budget_s: float = 0.0, floor: int = -1) -> float:
        """Time (s) of `steps` decode steps of `batch` sequences whose contexts summed to
        `ctx_sum` at the first, under the power cap and a controller's budget (s) or the ladder
        level it holds (`floor`) (`sim.kernel.costs.span_s`)."""
        lt, le = self.ladder_t, self.ladder_e
        return float(kernel_costs.span_s(lt, le, self._cap, budget_s, batch, ctx_sum, steps, floor))

    def decode(
        self, batch: int, ctx_sum: int, steps: int, budget_s: float = 0.0, floor: int = -1
    ) -> tuple[float, float, float, float, float]:
        """Time (s), energy (J), peak step power (W), `extra` and clock time (MHz·s) of `steps`
        decode steps under the power cap and a controller's budget (s) or held level
        (`sim.kernel.costs.decode`)."""
        dt, de, peak, extra, mhz_s = kernel_costs.decode(
            self.ladder_t, self.ladder_e, self._cap, budget_s, batch, ctx_sum, steps, floor
        )
        return float(dt), float(de), float(peak), float(extra), float(mhz_s)

    def mixed(
        self,
        decode_seqs: int,
        decode_ctx: int,
        prefill: list[tuple[int, int, int]],
        budget_s: float = 0.0,
        floor: int = -1,
    ) -> tuple[float, float, float, float]:
        """`step` of a step that decodes and prefills: (time s, energy J, extra, clock MHz)."""
        tokens, attn = prefill_sums(prefill)
        return self.step(decode_seqs, decode_ctx, len(prefill), tokens, attn, budget_s, floor)

    def wanted_level(self, budget_s: float, *x: int) -> int:
        """The ladder level of the lowest clock at which a step with features `x` (decode
        sequences, their contexts, prefilling sequences, prompt tokens, attention pairs) lasts at
        most `budget_s` (s); 0 (full clock) when none does or without a budget."""
        lt = self.ladder_t
        assert lt is not None
        level = 0
        if budget_s > 0.0:
            while level < len(lt) - 1 and _step_value(lt[level + 1], *x) <= budget_s:
                level += 1
        return level

    def missed(self, batch: int, ctx_sum: int, steps: int, budget_s: float) -> int:
        """How many of `steps` decode steps take longer than a controller's budget (s) even at
        full clock (`sim.kernel.levels.missed`)."""
        return int(levels.missed(self.ladder_t, budget_s, batch, ctx_sum, steps))

    def steps_to_reach(self, batch: int, ctx_sum: int, dt_s: float, budget_s: float = 0.0, floor: int = -1) -> int:
        """Smallest k ≥ 1 whose decode span, under the power cap and a controller's budget (s) or
        held level, lasts ≥ dt_s (s) (`sim.kernel.costs.steps_to_reach`)."""
        lt, le = self.ladder_t, self.ladder_e
        return int(kernel_costs.steps_to_reach(lt, le, self._cap, budget_s, batch, ctx_sum, dt_s, floor))


def prefill_sums(prefill: list[tuple[int, int, int]]) -> tuple[int, int]:
    """(prompt tokens, causal attention pairs) a step's prefill chunks compute; `prefill` holds
    (job, chunk tokens, tokens already cached) per prefilling sequence."""
    tokens = attn = 0
    for _, m, past in prefill:
        tokens += m
        attn += m * past + m * (m + 1) // 2
    return tokens, attn


def _step_value(c: Any, decode_seqs: int, decode_ctx: int, prefill_seqs: int, tokens: int, attn: int) -> float:
    """Time (s) or energy (J) of one step with these summed features; `c` a clock ladder's row
    (six coefficients, then the expert reads, the prefill overlap and the untouched chance:
    `sim.kernel.costs`)."""
    const = c[0] + _experts_value(c, decode_seqs + tokens) - _hidden_value(c, tokens)
    return float(const + c[1] * decode_seqs + c[2] * decode_ctx + c[3] * prefill_seqs + c[4] * tokens + c[5] * attn)


def _hidden_value(c: Any, tokens: int) -> float:
    """Time (s) or energy (J) a step prefilling `tokens` prompt tokens hides of its weights' read."""
    return float(min(c[linear.HIDE_WEIGHTS], c[linear.HIDE_TOKEN] * tokens))


def _experts_value(c: Any, tokens: int) -> float:
    """Time (s) or energy (J) of the routed experts a step of `tokens` tokens touches (a ladder row's)."""
    if c[linear.EXPERTS] == 0.0:
        return 0.0
    return float(-c[linear.EXPERTS] * math.expm1(tokens * float(c[linear.LOG_UNTOUCHED])))


def sequence_energy_j(coef_j: ArrayLike, n_in: ArrayLike, n_out: ArrayLike, chunks: ArrayLike = 1) -> Array:
    """Per-sequence (not shared) cost of requests, in the unit of `coef_j` (J or s).

    Prefill: c3 per chunk + c4·n_in + c5·n_in(n_in+1)/2 (chunking does not change the attention
    pairs). Decode steps k = 1…n_out−1 at context n_in + k: Σ (c1 + c2·(n_in + k)).
    """
    i, o = np.asarray(n_in, dtype=float), np.asarray(n_out, dtype=float)
    return sequence_cost(StepCoef.of(coef_j), i, o, np.asarray(chunks, dtype=float))


def sequence_cost(c: StepCoef, n_in: Any, n_out: Any, chunks: Any = 1) -> Any:
    """`sequence_energy_j` on whatever numbers it is given: Python scalars for a router's
    per-arrival decision (no numpy overhead), float arrays from `sequence_energy_j`."""
    k = n_out - 1
    prefill = c.prefill_seqs * chunks + c.prefill_tokens * n_in + c.prefill_attn * n_in * (n_in + 1) / 2
    decode = k * (c.decode_seqs + c.decode_ctx * n_in) + c.decode_ctx * k * (k + 1) / 2
    return prefill + decode


def prefill_cost(c: StepCoef, tokens: Any, pairs: Any) -> Any:
    """Cost of prefilling `tokens` prompt tokens with `pairs` causal attention pairs, per-chunk term
    aside, in the unit of `c` (J or s): what preemptions add, what a prefix cache spares."""
    return c.prefill_tokens * tokens + c.prefill_attn * pairs


def recompute_cost(c: StepCoef, tokens: Any, pairs: Any, steps: Any, ctx: Any) -> Any:
    """Extra cost of preemptions: prompt tokens prefilled again or thrown away (and their attention
    pairs), less the decode steps (and their contexts) that re-prefills replaced."""
    return prefill_cost(c, tokens, pairs) - c.decode_seqs * steps - c.decode_ctx * ctx


def request_energy_j(
    coef_j: ArrayLike, n_in: ArrayLike, n_out: ArrayLike, chunks: ArrayLike, share: ArrayLike
) -> Array:
    """Energy (J) charged to requests: their own sequence costs plus `share` × the step constant.

    `share` is Σ 1/(sequences in the step) over the steps a request took part in.
    """
    c = StepCoef.of(coef_j)
    return sequence_energy_j(c, n_in, n_out, chunks) + c.const * np.asarray(share, dtype=float)

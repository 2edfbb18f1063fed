"""The cost ledger of one server: its clock, its span log, its peak power; no decisions.

Each event of the engine advances the clock by a span of one or more steps; the ledger sums the
time (s) with Neumaier compensation, so that millions of spans keep the closed-form and the
step-by-step modes equal to 1e-9, and keeps one row per span for power plots and steady-state
windows. `sim.kernel.loop` compiles `advance` (held to it bit for bit by tests/sim/kernel).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RECENT = 0.95  # weight of the past in the moving average of step time, per step
SPAN_FLOATS = 6  # float columns of a span row: start, time, energy, peak power, KV share, MHz·s


@dataclass(frozen=True)
class ServerStats:
    """A server's activity: busy time (s), step energy (J), and its spans (one row per event, or
    per time bin in a streamed run: `span_bin_s`)."""

    name: str
    pool: str
    idle_power_w: float
    kv_capacity_tokens: int
    steps: int
    busy_s: float
    active_energy_j: float
    peak_power_w: float
    span_start_s: np.ndarray
    span_s: np.ndarray
    span_energy_j: np.ndarray
    span_peak_w: np.ndarray  # highest step power within each span (W)
    span_steps: np.ndarray  # steps in each span
    span_running: np.ndarray  # sequences in each step of the span (decoding + prefilling)
    span_tokens: np.ndarray  # output tokens emitted in the span (first tokens included)
    span_kv_used: np.ndarray  # share of the KV cache held at the end of the span
    preemptions: int = 0
    span_features: np.ndarray | None = None  # (spans, 6) summed step features, if recorded
    span_bin_s: float = 0.0  # 0: one row per span; > 0: spans aggregated into time bins this wide (s)
    span_mhz_s: np.ndarray | None = None  # SM clock × time of each span (MHz·s; 0 where the clock is unknown)
    missed_budget_steps: int = 0  # decode steps slower than a clock controller's budget even at full clock

    @property
    def known_mhz_s(self) -> np.ndarray | None:
        """`span_mhz_s` if every span that took time logged its SM clock; None when the clock is
        unknown (no clock log, or a GPU without clock parameters, whose spans log 0)."""
        m = self.span_mhz_s
        return m if m is not None and np.all(m[self.span_s > 0] > 0) else None


@dataclass(frozen=True)
class SpanChunk:
    """Consecutive spans of one server (the `ServerStats` span columns, without the prefix)."""

    start_s: np.ndarray
    span_s: np.ndarray
    energy_j: np.ndarray
    peak_w: np.ndarray
    steps: np.ndarray
    running: np.ndarray
    tokens: np.ndarray
    kv_used: np.ndarray
    mhz_s: np.ndarray  # SM clock × time (MHz·s)


def compensated_add(total: float, compensation: float, x: float) -> tuple[float, float]:
    """Neumaier's compensated sum: (total + x, the new compensation); total + compensation is the
    sum to about one rounding, however many terms (the clock and the shares over millions of spans)."""
    v = total + x
    return v, compensation + ((total - v) + x if total >= x else (x - v) + total)


class Ledger:
    """Clock (s) and span log of one server."""

    def __init__(self) -> None:
        self.t = self.tc = 0.0  # clock (s), with its compensation
        self.step_avg = 0.0  # recent step time (s)
        self.peak_w = 0.0
        self.steps = 0
        self.missed = 0  # decode steps slower than a clock controller's budget even at full clock
        self._f = array("d")  # per span: start (s), time (s), energy (J), peak power (W), KV share, MHz·s
        self._i = array("q")  # per span: steps, sequences per step, tokens emitted
        self._x = array("d")  # summed step features of each span, 6 per span (if recorded)
        self._full, self._on_full = 1 << 62, _nothing  # `hand_over`: len(self._i) that calls _on_full

    @property
    def now(self) -> float:
        """The clock (s)."""
        return self.t + self.tc

    @property
    def pending(self) -> int:
        """Spans logged since the last `take`."""
        return len(self._i) // 3

    def jump(self, t_s: float) -> None:
        """Move an idle clock forward to t_s (s)."""
        if t_s > self.now:
            self.t, self.tc = t_s, 0.0

    def record(self, features: tuple[float, float, float, float, float, float]) -> None:
        """Log the summed step features of the span about to be advanced."""
        self._x.extend(features)

    def advance(
        self,
        dt: float,
        de: float,
        steps: int,
        peak_w: float,
        running: int,
        tokens: int,
        kv_used: float,
        mhz_s: float,
    ) -> None:
        """Log a span of `steps` steps taking dt s and de J, `running` sequences per step emitting
        `tokens` output tokens in all, at SM clocks summing to `mhz_s` (MHz·s), and move the
        clock past it."""
        t, tc = self.t, self.tc
        self._f.extend((t + tc, dt, de, peak_w, kv_used, mhz_s))
        self._i.extend((steps, running, tokens))
        self.t, self.tc = compensated_add(t, tc, dt)
        self.steps += steps
        self.step_avg += (1.0 - RECENT**steps) * (dt / steps - self.step_avg)
        if peak_w > self.peak_w:
            self.peak_w = peak_w
        if len(self._i) >= self._full:
            self._on_full()

    def take(self) -> SpanChunk:
        """The spans logged since the last `take`, handed over and forgotten (streamed runs)."""
        f = np.frombuffer(self._f, dtype=float).reshape(-1, SPAN_FLOATS).T.copy()
        i = np.frombuffer(self._i, dtype=np.int64).reshape(-1, 3).T.copy()
        self._f, self._i = array("d"), array("q")
        return SpanChunk(f[0], f[1], f[2], f[3], i[0], i[1], i[2], f[4], f[5])

    @property
    def first_pending_s(self) -> float:
        """Start (s) of the first span not yet taken (inf: none)."""
        return self._f[0] if self._f else math.inf

    def hand_over(self, every_spans: int, callback: Callable[[], None]) -> None:
        """Call `callback` whenever `every_spans` spans are logged and not taken (streamed runs)."""
        self._full, self._on_full = 3 * every_spans, callback

    def stats(self, name: str, pool: str, idle_power_w: float, kv_tokens: int, preemptions: int) -> ServerStats:
        """Totals and span log so far."""
        f = np.frombuffer(self._f, dtype=float).reshape(-1, SPAN_FLOATS)
        i = np.frombuffer(self._i, dtype=np.int64).reshape(-1, 3)
        dt, e = f[:, 1].copy(), f[:, 2].copy()
        return ServerStats(
            name,
            pool,
            idle_power_w,
            kv_tokens,
            self.steps,
            float(np.sum(dt)),
            float(np.sum(e)),
            self.peak_w,
            f[:, 0].copy(),
            dt,
            e,
            f[:, 3].copy(),
            i[:, 0].copy(),
            i[:, 1].copy(),
            i[:, 2].copy(),
            f[:, 4].copy(),
            preemptions,
            np.frombuffer(self._x, dtype=float).reshape(-1, 6).copy() if len(self._x) else None,
            span_mhz_s=f[:, 5].copy(),
            missed_budget_steps=self.missed,
        )


def _nothing() -> None:
    pass

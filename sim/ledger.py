"""The cost ledger of one server: its clock, its span log, its peak power; no decisions.

Each event of the engine advances the clock by a span of one or more steps; the ledger sums the
time (s) with Neumaier compensation, so that millions of spans keep the closed-form and the
step-by-step modes equal to 1e-9, and keeps one row per span for power plots and steady-state
windows.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np

RECENT = 0.95  # weight of the past in the moving average of step time, per step


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
        self._t, self._dt, self._e, self._p, self._kv = (array("d") for _ in range(5))
        self._k, self._run, self._tok = array("q"), array("q"), array("q")
        self._x = array("d")  # summed step features of each span, 6 per span (if recorded)

    @property
    def now(self) -> float:
        """The clock (s)."""
        return self.t + self.tc

    @property
    def pending(self) -> int:
        """Spans logged since the last `take`."""
        return len(self._dt)

    def jump(self, t_s: float) -> None:
        """Move an idle clock forward to t_s (s)."""
        if t_s > self.now:
            self.t, self.tc = t_s, 0.0

    def record(self, features: tuple[float, float, float, float, float, float]) -> None:
        """Log the summed step features of the span about to be advanced."""
        self._x.extend(features)

    def advance(
        self, dt: float, de: float, steps: int, peak_w: float, running: int, tokens: int, kv_used: float
    ) -> None:
        """Log a span of `steps` steps taking dt s and de J, `running` sequences per step emitting
        `tokens` output tokens in all, and move the clock past it."""
        self._t.append(self.t + self.tc)
        self.t, self.tc = compensated_add(self.t, self.tc, dt)
        self._dt.append(dt)
        self._e.append(de)
        self._p.append(peak_w)
        self._kv.append(kv_used)
        self._k.append(steps)
        self._run.append(running)
        self._tok.append(tokens)
        self.steps += steps
        self.step_avg += (1.0 - RECENT**steps) * (dt / steps - self.step_avg)
        if peak_w > self.peak_w:
            self.peak_w = peak_w

    def take(self) -> SpanChunk:
        """The spans logged since the last `take`, handed over and forgotten (streamed runs)."""
        chunk = SpanChunk(
            _floats(self._t), _floats(self._dt), _floats(self._e), _floats(self._p),
            _ints(self._k), _ints(self._run), _ints(self._tok), _floats(self._kv),
        )  # fmt: skip
        self._t, self._dt, self._e, self._p, self._kv = (array("d") for _ in range(5))
        self._k, self._run, self._tok = array("q"), array("q"), array("q")
        return chunk

    def stats(self, name: str, pool: str, idle_power_w: float, kv_tokens: int, preemptions: int) -> ServerStats:
        """Totals and span log so far."""
        dt, e = _floats(self._dt), _floats(self._e)
        return ServerStats(
            name,
            pool,
            idle_power_w,
            kv_tokens,
            self.steps,
            float(np.sum(dt)),
            float(np.sum(e)),
            self.peak_w,
            _floats(self._t),
            dt,
            e,
            _floats(self._p),
            _ints(self._k),
            _ints(self._run),
            _ints(self._tok),
            _floats(self._kv),
            preemptions,
            _floats(self._x).reshape(-1, 6) if len(self._x) else None,
        )


def _floats(a: array) -> np.ndarray:
    return np.frombuffer(a, dtype=float).copy()


def _ints(a: array) -> np.ndarray:
    return np.frombuffer(a, dtype=np.int64).copy()

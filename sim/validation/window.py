"""Steady-state metrics over a server's span log, as the ML.ENERGY benchmark measures them.

Window (github.com/ml-energy/benchmark, commit c1d6557f, `mlenergy/benchmark/llm/benchmark.py`,
class `RequestTracker`): it opens when `max_num_seqs` requests have received their first token and
closes when `num_requests − max_num_seqs − 1` requests have finished. Energy per token is the
window's energy over the output tokens emitted in it, power that energy over the window's length,
average batch the time-weighted mean of running sequences (vLLM's `num_requests_running` gauge,
sampled every 1 s). The median ITL is over the decode tokens of the whole run, as
github.com/ml-energy/data (`_client_itl_percentiles_ms`) takes it over every request's gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.engine.ledger import ServerStats


@dataclass(frozen=True)
class Spans:
    """A server's span log: start (s), duration (s), energy (J), steps, sequences per step and
    output tokens emitted (first tokens included), one entry per span."""

    start_s: np.ndarray
    duration_s: np.ndarray
    energy_j: np.ndarray
    steps: np.ndarray
    running: np.ndarray
    tokens: np.ndarray

    @classmethod
    def from_stats(cls, stats: ServerStats) -> Spans:
        """The span arrays of one simulated server."""
        return cls(
            stats.span_start_s,
            stats.span_s,
            stats.span_energy_j,
            stats.span_steps,
            stats.span_running,
            stats.span_tokens,
        )


@dataclass(frozen=True)
class Window:
    """A time interval [start_s, end_s] (s)."""

    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        """Duration (s)."""
        return self.end_s - self.start_s


@dataclass(frozen=True)
class WindowMetrics:
    """Figures over a window: mean running sequences, output tokens/s, J per output token, W."""

    batch: float
    throughput: float
    energy_per_token: float
    power: float
    tokens: float
    energy_j: float


class EmptyWindowError(ValueError):
    """The run has no steady-state window under the rule asked for."""


def steady_window(
    first_token_s: np.ndarray, finish_s: np.ndarray, max_num_seqs: int, *, opened_by: int | None = None
) -> Window:
    """ML.ENERGY's window: from the `opened_by`-th first token (default `max_num_seqs`) to the
    (n − max_num_seqs − 1)-th finish, n = number of requests. Raises EmptyWindowError when the
    window does not exist (too few requests, or the opening comes after the close)."""
    first = np.sort(np.asarray(first_token_s, dtype=float))
    finish = np.sort(np.asarray(finish_s, dtype=float))
    n, cap = finish.size, int(max_num_seqs)
    opened = cap if opened_by is None else int(opened_by)
    if not 1 <= opened <= first.size or n - cap - 1 < 1:
        raise EmptyWindowError(f"{n} requests at max_num_seqs {cap} leave no steady-state window")
    window = Window(float(first[opened - 1]), float(finish[n - cap - 2]))
    if not window.length_s > 0:
        raise EmptyWindowError(
            f"the {opened}-th first token at {window.start_s:.3f} s comes after "
            f"the {n - cap - 1}-th finish at {window.end_s:.3f} s"
        )
    return window


def window_metrics(spans: Spans, window: Window, idle_power_w: float) -> WindowMetrics:
    """Metrics over `window`; a span cut by the window counts pro rata in time, and time inside
    the window that no span covers draws `idle_power_w` with no sequences running."""
    frac, overlap = window_share(spans, window)
    length = window.length_s
    energy = float(frac @ spans.energy_j) + idle_power_w * max(length - float(overlap.sum()), 0.0)
    tokens = float(frac @ spans.tokens)
    return WindowMetrics(
        batch=float(overlap @ spans.running) / length,
        throughput=tokens / length,
        energy_per_token=energy / tokens if tokens > 0 else float("nan"),
        power=energy / length,
        tokens=tokens,
        energy_j=energy,
    )


def window_share(spans: Spans, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Per span: the share of it inside `window` (pro rata in time) and its time inside it (s)."""
    start, dur = spans.start_s, spans.duration_s
    overlap = np.clip(np.minimum(start + dur, window.end_s) - np.maximum(start, window.start_s), 0.0, None)
    inside = (start >= window.start_s) & (start < window.end_s)
    frac = np.where(dur > 0, overlap / np.where(dur > 0, dur, 1.0), inside.astype(float))
    return frac, overlap


def first_tokens_per_span(spans: Spans, first_token_s: np.ndarray) -> np.ndarray:
    """How many first tokens each span emits (a first token comes at the end of its span)."""
    mid = spans.start_s + spans.duration_s / 2.0
    idx = np.searchsorted(mid, np.asarray(first_token_s, dtype=float)) - 1
    idx = idx[(idx >= 0) & np.isfinite(first_token_s)]
    return np.bincount(idx, minlength=spans.start_s.size)[: spans.start_s.size]


def median_itl_s(spans: Spans, decode_tokens: np.ndarray) -> float:
    """Token-weighted median step time (s): a span of k steps lasting d s gives each of its
    `decode_tokens` an inter-token latency of d / k (the lower weighted median)."""
    i = median_span(spans, decode_tokens)
    return float("nan") if i is None else float(spans.duration_s[i] / spans.steps[i])


def median_span(spans: Spans, decode_tokens: np.ndarray) -> int | None:
    """Index of the span whose mean step time is the token-weighted median ITL (None: no decode)."""
    steps = np.asarray(spans.steps, dtype=float)
    weights = np.asarray(decode_tokens, dtype=float)
    keep = np.flatnonzero((steps > 0) & (weights > 0))
    if not keep.size:
        return None
    step_s = spans.duration_s[keep] / steps[keep]
    order = np.argsort(step_s, kind="stable")
    cum = np.cumsum(weights[keep][order])
    return int(keep[order][np.searchsorted(cum, cum[-1] / 2.0)])

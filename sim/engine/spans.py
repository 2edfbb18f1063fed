"""Span logs in bounded memory, for streamed runs: time bins for plots, an exact fleet peak.

A long run logs a few spans per request; kept whole, they cost more than the requests' own data.
A streamed run hands each server's spans over in chunks (`sim.engine.ledger.Ledger.take`) and keeps:
- `Timeline`: per time bin, busy time (s), energy (J), the highest step power (W), steps, output
  tokens, and time-weighted running sequences and KV use; a fixed number of bins whose width
  doubles as the run grows. What plots and power timelines need, to within one bin.
- `PeakSweep`: the fleet's highest total power (W), event by event as soon as no server can still
  log a span that starts earlier (`sim.results.metrics.fleet_peak_power_w` runs the same sweep over
  whole span logs).
Pure numpy; nothing here knows about SimPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from sim.engine.ledger import Ledger, ServerStats, SpanChunk

BINS = 4096  # time bins per server; the width doubles whenever the run outgrows them
FIRST_BIN_S = 1.0 / 64  # initial bin width (s)
_SUMS = ("busy_s", "energy_j", "steps", "tokens", "running_s", "kv_s", "mhz_s")


@dataclass
class Timeline:
    """One server's spans summed into `bins` time bins of `width_s` (s) from time 0."""

    bins: int = BINS
    width_s: float = FIRST_BIN_S
    sums: dict[str, np.ndarray] = field(init=False)
    peak_w: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.sums = {name: np.zeros(self.bins) for name in _SUMS}
        self.peak_w = np.zeros(self.bins)

    def add(self, c: SpanChunk) -> None:
        """Spread each span over the bins it overlaps, in proportion to time (counts and energy)."""
        if not c.start_s.size:
            return
        end = c.start_s + c.span_s
        while float(end.max()) >= self.bins * self.width_s:
            self._coarsen()
        w = self.width_s
        b0 = np.floor(c.start_s / w).astype(np.int64)
        b1 = np.maximum(np.floor(end / w).astype(np.int64), b0)
        pieces = b1 - b0 + 1
        span = np.repeat(np.arange(b0.size), pieces)
        first = np.repeat(np.cumsum(pieces) - pieces, pieces)
        b = b0[span] + (np.arange(span.size) - first)
        overlap = np.maximum(np.minimum(end[span], (b + 1) * w) - np.maximum(c.start_s[span], b * w), 0.0)
        dt = c.span_s[span]
        share = np.divide(overlap, dt, out=np.ones_like(overlap), where=dt > 0)
        add = {
            "busy_s": overlap,
            "energy_j": c.energy_j[span] * share,
            "steps": c.steps[span] * share,
            "tokens": c.tokens[span] * share,
            "running_s": c.running[span] * overlap,
            "kv_s": c.kv_used[span] * overlap,
            "mhz_s": c.mhz_s[span] * share,
        }
        for name, values in add.items():
            self.sums[name] += np.bincount(b, weights=values, minlength=self.bins)
        counted = (overlap > 0) | (pieces[span] == 1)
        np.maximum.at(self.peak_w, b[counted], c.peak_w[span][counted])

    def _coarsen(self) -> None:
        """Double the bin width: pairs of bins merge into the first half."""
        half = self.bins // 2
        for name, values in self.sums.items():
            self.sums[name] = np.concatenate([values.reshape(half, 2).sum(axis=1), np.zeros(half)])
        self.peak_w = np.concatenate([self.peak_w.reshape(half, 2).max(axis=1), np.zeros(half)])
        self.width_s *= 2

    def as_spans(self) -> SpanChunk:
        """One pseudo-span per bin with activity: starting at the bin's start, lasting its busy
        time, with its energy, peak power, steps and tokens (rounded), time-averaged running
        sequences and KV use, and its clock time (MHz·s)."""
        s = self.sums
        keep = np.flatnonzero((s["busy_s"] > 0) | (s["steps"] > 0))
        busy = s["busy_s"][keep]
        per_s = np.where(busy > 0, busy, 1.0)
        return SpanChunk(
            keep * self.width_s,
            busy,
            s["energy_j"][keep],
            self.peak_w[keep],
            np.rint(s["steps"][keep]).astype(np.int64),
            s["running_s"][keep] / per_s,
            np.rint(s["tokens"][keep]).astype(np.int64),
            s["kv_s"][keep] / per_s,
            s["mhz_s"][keep],
        )


class PeakSweep:
    """The fleet's highest total power (W), from span chunks as they come, server by server.

    Each span raises its server above idle power by max(its peak − idle, 0) from its start to its
    end (clipped to the server's next span start); events run in the order (time, end before
    start, server, span), and the total is a running sum in that order.
    """

    def __init__(self, idle_power_w: Sequence[float]) -> None:
        self.idle_w = list(idle_power_w)
        self.level = 0.0
        self.best = -math.inf
        self._held: list[tuple[float, float, float, float] | None] = [None] * len(self.idle_w)
        self._count = [0] * len(self.idle_w)
        self._events: list[np.ndarray] = []  # (time, is start, server, span, delta) rows

    def add(self, server: int, start_s: np.ndarray, span_s: np.ndarray, peak_w: np.ndarray) -> None:
        """The next spans of `server`, in order; the last one's end waits for its successor's start."""
        if not start_s.size:
            return
        idx = (self._count[server] + np.arange(start_s.size)).astype(float)
        self._count[server] += start_s.size
        lift = np.maximum(peak_w - self.idle_w[server], 0.0)
        self._push(server, start_s, 1.0, lift, idx)
        held = self._held[server]
        if held is not None:
            t0, dt, up, k = held
            start_s, span_s = np.append(t0, start_s), np.append(dt, span_s)
            lift, idx = np.append(up, lift), np.append(k, idx)
        self._held[server] = (float(start_s[-1]), float(span_s[-1]), float(lift[-1]), float(idx[-1]))
        ends = np.minimum(start_s[:-1] + span_s[:-1], start_s[1:])
        self._push(server, ends, 0.0, -lift[:-1], idx[:-1])

    def _release(self, server: int) -> None:
        """Push the end of `server`'s held span, unclipped (no later span starts before it)."""
        held = self._held[server]
        assert held is not None
        t0, dt, up, k = held
        self._push(server, np.array([t0 + dt]), 0.0, np.array([-up]), np.array([k]))
        self._held[server] = None

    def _push(self, server: int, t_s: np.ndarray, is_start: float, delta: np.ndarray, idx: np.ndarray) -> None:
        if t_s.size:
            ev = np.empty((t_s.size, 5))
            ev[:, 0], ev[:, 1], ev[:, 2], ev[:, 3], ev[:, 4] = t_s, is_start, server, idx, delta
            self._events.append(ev)

    def drain(self, horizon_s: float) -> None:
        """Sum every event before `horizon_s` (no server will log a span starting earlier)."""
        for server, held in enumerate(self._held):  # an end before any next start is final
            if held is not None and held[0] + held[1] < horizon_s:
                self._release(server)
        if not self._events:
            return
        ev = np.concatenate(self._events)
        now = ev[:, 0] < horizon_s
        self._events = [ev[~now]] if not now.all() else []
        ev = ev[now]
        if not ev.size:
            return
        order = np.lexsort((ev[:, 3], ev[:, 2], ev[:, 1], ev[:, 0]))
        c = np.cumsum(np.concatenate(([self.level], ev[order, 4])))
        self.best = max(self.best, float(c[1:].max()))
        self.level = float(c[-1])

    def finish(self) -> float:
        """Close every server's last span; the highest total power (W), idle power included."""
        self.drain(math.inf)
        return float(sum(self.idle_w)) + max(self.best, 0.0)


class StreamedSpans:
    """Every server's spans, handed over from its ledger as the run goes: timelines, totals, and
    the fleet peak up to what is settled: before `settled()` (s), no server will start a span,
    and before every ledger's first span not yet taken."""

    def __init__(self, ledgers: Sequence[Ledger], idle_power_w: Sequence[float], settled: Callable[[], float]) -> None:
        self.ledgers = list(ledgers)
        self.settled = settled
        self.timelines = [Timeline() for _ in self.ledgers]
        self.busy_s = [0.0] * len(self.ledgers)
        self.energy_j = [0.0] * len(self.ledgers)
        self.sweep = PeakSweep(idle_power_w)

    def take(self, i: int) -> None:
        """Take server i's new spans; sum the fleet's power up to what is settled."""
        c = self.ledgers[i].take()
        if c.start_s.size:
            self.timelines[i].add(c)
            self.busy_s[i] += float(np.sum(c.span_s))
            self.energy_j[i] += float(np.sum(c.energy_j))
            self.sweep.add(i, c.start_s, c.span_s, c.peak_w)
        self.sweep.drain(min(self.settled(), *(ledger.first_pending_s for ledger in self.ledgers)))

    def finish(self, stats: Sequence[ServerStats]) -> tuple[tuple[ServerStats, ...], float]:
        """The servers' stats with binned spans and the totals; the fleet's peak power (W)."""
        for i in range(len(self.ledgers)):
            self.take(i)
        out = []
        for i, s in enumerate(stats):
            t = self.timelines[i]
            c = t.as_spans()
            out.append(
                replace(
                    s, busy_s=self.busy_s[i], active_energy_j=self.energy_j[i],
                    span_start_s=c.start_s, span_s=c.span_s, span_energy_j=c.energy_j, span_peak_w=c.peak_w,
                    span_steps=c.steps, span_running=c.running, span_tokens=c.tokens, span_kv_used=c.kv_used,
                    span_features=None, span_bin_s=t.width_s, span_mhz_s=c.mhz_s,
                )
            )  # fmt: skip
        return tuple(out), self.sweep.finish()

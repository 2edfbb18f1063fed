"""Span logs in bounded memory: the streamed fleet peak equals the whole-log one; bins keep totals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.engine.ledger import ServerStats, SpanChunk
from sim.engine.spans import PeakSweep, Timeline
from sim.results.metrics import fleet_peak_power_w, lone_peak_power_w


def _server(name: str, idle_w: float, t0: np.ndarray, dt: np.ndarray, peak: np.ndarray) -> ServerStats:
    n = t0.size
    ints = np.ones(n, dtype=np.int64)
    return ServerStats(name, "main", idle_w, 100, n, float(dt.sum()), float(dt.sum()), float(peak.max(initial=0.0)),
                       t0, dt, dt * peak, peak, ints, ints, ints, np.zeros(n))  # fmt: skip


def _spans(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n abutting or gapped spans on a coarse grid (equal times across servers are common)."""
    dt = rng.integers(0, 4, n) * 0.25
    gap = rng.integers(0, 3, n) * 0.25 * (rng.random(n) < 0.3)
    t0 = np.concatenate(([0.0], np.cumsum(dt + gap)[:-1]))[:n]
    return t0, dt, rng.integers(0, 8, n) * 50.0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), servers=st.integers(1, 4), chunk=st.integers(1, 9))
def test_the_streamed_fleet_peak_equals_the_one_from_whole_span_logs(seed, servers, chunk):
    rng = np.random.default_rng(seed)
    logs = [_spans(rng, int(rng.integers(0, 30))) for _ in range(servers)]
    idle = [float(rng.integers(50, 100)) for _ in range(servers)]
    expected = fleet_peak_power_w([_server(f"s{i}", idle[i], *log) for i, log in enumerate(logs)])
    sweep = PeakSweep(idle)
    cursor = [0] * servers
    while any(cursor[i] < logs[i][0].size for i in range(servers)):
        for i, (t0, dt, peak) in enumerate(logs):
            a, b = cursor[i], min(cursor[i] + chunk, t0.size)
            sweep.add(i, t0[a:b], dt[a:b], peak[a:b])
            cursor[i] = b
        # what no server can still precede: the start of every server's next span
        horizon = min((log[0][c] if c < log[0].size else np.inf) for log, c in zip(logs, cursor, strict=True))
        sweep.drain(horizon)
    assert sweep.finish() == expected  # same events, same order, same running sum: bit for bit


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 40))
def test_a_lone_server_s_peak_is_the_sweep_s(seed, n):
    """Gaps, abutting spans and zero-length ones (which the sweep never counts), bit for bit."""
    rng = np.random.default_rng(seed)
    t0, dt, peak = _spans(rng, n)
    idle = float(rng.integers(50, 100))
    sweep = PeakSweep([idle])
    sweep.add(0, t0, dt, peak)
    assert lone_peak_power_w(_server("s", idle, t0, dt, peak)) == sweep.finish()


def test_a_lone_server_peaks_at_its_highest_step_power_or_idle():
    sweep = PeakSweep([80.0])
    sweep.add(0, np.array([0.0, 1.0]), np.array([1.0, 2.0]), np.array([300.0, 50.0]))
    assert sweep.finish() == 300.0
    idle_only = PeakSweep([80.0, 70.0])
    assert idle_only.finish() == 150.0


def _chunk(t0, dt, e, peak, steps, running, tokens, kv, mhz=1980.0) -> SpanChunk:
    f, i = (lambda x: np.asarray(x, dtype=float)), (lambda x: np.asarray(x, dtype=np.int64))
    return SpanChunk(f(t0), f(dt), f(e), f(peak), i(steps), i(running), i(tokens), f(kv), mhz * f(dt))


def test_bins_keep_the_totals_and_split_a_span_by_time():
    timeline = Timeline(bins=8, width_s=1.0)
    timeline.add(_chunk([0.5, 2.0], [1.0, 0.0], [10.0, 3.0], [200.0, 90.0], [4, 1], [2, 3], [8, 3], [0.5, 0.25]))
    s = timeline.sums
    assert s["busy_s"][:3].tolist() == [0.5, 0.5, 0.0]
    assert s["energy_j"][:3].tolist() == [5.0, 5.0, 3.0]  # a zero-length span lands whole in its bin
    assert s["steps"][:3].tolist() == [2.0, 2.0, 1.0]
    assert s["running_s"][:2].tolist() == [1.0, 1.0]
    assert timeline.peak_w[:3].tolist() == [200.0, 200.0, 90.0]
    assert s["mhz_s"][:2].tolist() == [990.0, 990.0]  # 1,980 MHz over each bin's half second


def test_bins_double_their_width_when_the_run_outgrows_them_and_keep_every_sum():
    rng = np.random.default_rng(3)
    t0 = np.sort(rng.random(500) * 1000)
    dt = rng.random(500)
    ones = np.ones(500, dtype=np.int64)
    timeline = Timeline(bins=16, width_s=0.5)
    for a in range(0, 500, 100):
        sl = slice(a, a + 100)
        timeline.add(
            SpanChunk(t0[sl], dt[sl], 2 * dt[sl], 100 + dt[sl], ones[sl], ones[sl], ones[sl], dt[sl], 1410 * dt[sl])
        )
    assert timeline.width_s == 0.5 * 2**7  # 16 bins of 64 s cover the last end (< 1001 s)
    assert timeline.sums["busy_s"].sum() == pytest.approx(dt.sum(), rel=1e-12)
    assert timeline.sums["energy_j"].sum() == pytest.approx(2 * dt.sum(), rel=1e-12)
    assert timeline.sums["steps"].sum() == pytest.approx(500, rel=1e-12)
    assert timeline.peak_w.max() == (100 + dt).max()
    spans = timeline.as_spans()
    assert spans.span_s.sum() == pytest.approx(dt.sum(), rel=1e-12)
    np.testing.assert_allclose(spans.mhz_s / spans.span_s, 1410.0, rtol=1e-12)  # the clock, bin by bin
    assert np.all(spans.start_s % timeline.width_s == 0)


def test_binned_spans_refuse_the_whole_log_peak():
    stats = _server("a", 80.0, np.array([0.0]), np.array([1.0]), np.array([100.0]))
    from dataclasses import replace

    with pytest.raises(ValueError, match="SimResult.peak_power_w"):
        fleet_peak_power_w([replace(stats, span_bin_s=1.0)])

"""One long trace split into time windows simulated in parallel (as Ray tasks, or one after another
in this process through the same code), merged into one result.

Window k owns the arrivals in [b_k, b_{k+1}) (b_0 = -inf, b_K = +inf; boundaries split the trace
into equal request counts). It simulates its own requests after those of the `warmup_s` seconds
before b_k, which fill the queues and batches, and before those of the `cooldown_s` seconds after
b_{k+1}, which keep its last requests in a loaded server (both are simulated and discarded), and
runs until its last request finishes. The merge keeps:

- every request's record from the window owning its arrival (each request exactly once);
- every server's spans clipped to the owned range [b_k, b_{k+1}): a span crossing a boundary keeps
  the share of its duration inside, and the same share of its energy (J), steps and tokens.

Busy time and step energy are sums of the kept spans, so idle energy (idle power × time not
busy, `sim.results.metrics`) and the total follow. Per-request energies come from each owner window, so
their sum plus idle energy matches the total only to the merge's accuracy. Routers restart in each
window (round robin from replica 0).

The warm-up must cover the longest stay of a request (queueing included) at the boundary, or the
next window starts with too little work. A check: the first half of a window's cool-down are the
next window's first requests, served there after the true history; when their mean end-to-end
latency in the two windows differs by more than 1 %, `simulate_windows` logs a warning.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd

from sim.engine.checks import checked_arrays
from sim.engine.ledger import ServerStats
from sim.policies.base import Policy
from sim.schema import ConfigError, check
from sim.serving.fleet import Fleet
from sim.serving.run import SimResult, simulate_fleet

EXECUTORS = ("local", "ray")
COUNTS = ("span_steps", "span_tokens")  # per-span counts split (rounded) with the span's time, like its energy
RAY_MISSING = "{}='ray' needs Ray: pip install 'sweetspot-sim[ray]'"
DRIFT_WARN = 0.01  # relative difference of mean e2e latency across a boundary that gets a warning

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """Rows [first, last) of the trace are simulated; rows [owned, stop) and the time range
    [start_s, end_s) (s) belong to this window; rows [stop, probe) check the next one's warm-up."""

    index: int
    first: int
    owned: int
    stop: int
    last: int
    probe: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class Part:
    """What one window returns: its owned records, its servers' clipped spans, its wall time (s),
    and the end-to-end latencies (s) of its probe rows (the next window's first requests)."""

    records: pd.DataFrame
    servers: tuple[ServerStats, ...]
    wall_s: float
    probe_e2e_s: np.ndarray


def plan_windows(arrival_s: np.ndarray, windows: int, warmup_s: float, cooldown_s: float = 0.0) -> tuple[Window, ...]:
    """Up to `windows` windows of about equal request counts (fewer when arrival times repeat)."""
    n = arrival_s.size
    cuts = arrival_s[[round(k * n / windows) for k in range(1, windows)]] if n else np.array([])
    bounds = np.unique(cuts[cuts > arrival_s[0]]) if n else cuts
    edges = np.concatenate([[-math.inf], bounds, [math.inf]])
    owned = np.searchsorted(arrival_s, edges[:-1], side="left")
    first = np.searchsorted(arrival_s, edges[:-1] - warmup_s, side="left")
    stop = np.append(owned[1:], n)
    last = np.searchsorted(arrival_s, edges[1:] + cooldown_s, side="left")
    probe = np.minimum(np.searchsorted(arrival_s, edges[1:] + cooldown_s / 2, side="left"), np.append(stop[1:], n))
    return tuple(
        Window(
            k, int(first[k]), int(owned[k]), int(stop[k]), int(last[k]), int(probe[k]), *map(float, edges[k : k + 2])
        )
        for k in range(len(owned))
    )


@dataclass(frozen=True)
class ExecutionConfig:
    """Where one run's trace is simulated: `mode` 'single' (one `simulate_fleet` call), 'local' or
    'ray' (`simulate_windows` with that executor, `windows` windows, overlaps in s)."""

    mode: str = "single"
    windows: int = 2
    warmup_s: float = 300.0
    cooldown_s: float | None = None  # None: warmup_s

    def __post_init__(self) -> None:
        modes = ("single", *EXECUTORS)
        check(self.mode in modes, "execution.mode", f"must be one of {modes}, got {self.mode!r}")
        check(isinstance(self.windows, int) and self.windows >= 1, "execution.windows", "must be an int ≥ 1")
        check(math.isfinite(self.warmup_s) and self.warmup_s >= 0, "execution.warmup_s", "must be ≥ 0 s")
        cool = self.cooldown_s
        check(cool is None or (math.isfinite(cool) and cool >= 0), "execution.cooldown_s", "must be null or ≥ 0 s")
        if self.mode == "ray" and not _ray_installed():
            raise ConfigError(RAY_MISSING.format("execution.mode"))

    def simulate(self, requests: pd.DataFrame, fleet: Fleet, policy: Policy | None = None) -> SimResult:
        """The run this config asks for."""
        if self.mode == "single":
            return simulate_fleet(requests, fleet, policy)
        return simulate_windows(requests, fleet, policy, windows=self.windows, warmup_s=self.warmup_s,
                                cooldown_s=self.cooldown_s, executor=self.mode)  # fmt: skip


CLOSED_LOOP_WINDOWS = "are a closed loop: its arrivals depend on completions, so it runs whole (execution.mode=single)"


def simulate_windows(
    requests: pd.DataFrame,
    fleet: Fleet,
    policy: Policy | None = None,
    *,
    windows: int,
    warmup_s: float,
    cooldown_s: float | None = None,
    executor: str = "local",
) -> SimResult:
    """`simulate_fleet` of `requests` split into `windows` time windows with `warmup_s` s of warm-up
    and `cooldown_s` s (None: warmup_s) of cool-down each, run by `executor` ('local': one after
    another in this process; 'ray': parallel Ray tasks), merged."""
    cooldown_s = warmup_s if cooldown_s is None else cooldown_s
    check(isinstance(windows, int) and windows >= 1, "windows", f"must be an int ≥ 1, got {windows!r}")
    check(math.isfinite(warmup_s) and warmup_s >= 0, "warmup_s", f"must be ≥ 0 s, got {warmup_s!r}")
    check(math.isfinite(cooldown_s) and cooldown_s >= 0, "cooldown_s", f"must be ≥ 0 s, got {cooldown_s!r}")
    check(executor in EXECUTORS, "executor", f"must be one of {EXECUTORS}, got {executor!r}")
    check(not requests.attrs.get("clients"), "requests", CLOSED_LOOP_WINDOWS)
    policy = policy or Policy()
    start = time.perf_counter()
    arrival = checked_arrays(requests)[0]  # the windows are planned on arrivals checked as the run checks them
    plan = plan_windows(arrival, windows, warmup_s, cooldown_s)
    if len(plan) == 1:
        return simulate_fleet(requests, fleet, policy)
    slices = [requests.iloc[w.first : w.last].reset_index(drop=True) for w in plan]
    if executor == "ray":
        parts = _on_ray(slices, fleet, policy, plan)
    else:
        parts = [simulate_window(s, fleet, policy, w) for s, w in zip(slices, plan, strict=True)]
    drift = boundary_drift(parts)
    if drift and max(drift) > DRIFT_WARN:
        k = int(np.argmax(drift))
        log.warning("windows: the requests after boundary %d have a mean end-to-end latency %.1f %% off the one "
                    "the window before gives them; warmup_s=%g s is too short for this load (use more than the "
                    "longest stay of a request)", k + 1, 100 * drift[k], warmup_s)  # fmt: skip
    return merge(parts, policy.name, float(arrival[-1]), time.perf_counter() - start)


def boundary_drift(parts: list[Part]) -> list[float]:
    """Per boundary: relative difference of the mean end-to-end latency of the next window's first
    requests, as it serves them vs as the window before does in its cool-down (0: none)."""
    out = []
    for before, after in zip(parts, parts[1:], strict=False):
        mine = after.records["e2e_s"].to_numpy()[: before.probe_e2e_s.size]
        ok = np.isfinite(mine) & np.isfinite(before.probe_e2e_s)
        out.append(abs(mine[ok].mean() / before.probe_e2e_s[ok].mean() - 1.0) if ok.any() else 0.0)
    return out


def simulate_window(requests: pd.DataFrame, fleet: Fleet, policy: Policy, window: Window) -> Part:
    """Simulate one window's rows (warm-up, owned, cool-down) and keep what it owns."""
    result = simulate_fleet(requests, fleet, policy)
    records = result.requests.iloc[window.owned - window.first : window.stop - window.first].copy()
    records["request_id"] += window.first
    servers = tuple(clip(s, window.start_s, window.end_s) for s in result.servers)
    probe = result.requests["e2e_s"].to_numpy()[window.stop - window.first : window.probe - window.first]
    return Part(records, servers, result.wall_s, probe)


def clip(stats: ServerStats, start_s: float, end_s: float) -> ServerStats:
    """A server's spans within [start_s, end_s) (s); a span crossing an end keeps the share of its
    time inside, and that share of its energy, steps and tokens (rounded). Totals recomputed."""
    if stats.span_bin_s > 0:
        raise ValueError(f"server {stats.name!r} keeps its spans in time bins (a streamed run): they cannot be clipped")
    t0 = stats.span_start_s
    t1 = t0 + stats.span_s
    lo, hi = np.maximum(t0, start_s), np.minimum(t1, end_s)
    inside = (t0 >= start_s) & (t0 < end_s)
    keep = (hi > lo) | ((stats.span_s == 0) & inside)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(stats.span_s > 0, (hi - lo) / stats.span_s, 1.0)[keep]
    spans: dict[str, Any] = {}
    for f in fields(stats):
        value = getattr(stats, f.name)
        if f.name.startswith("span_") and isinstance(value, np.ndarray):
            spans[f.name] = value[keep]
    spans["span_start_s"], spans["span_s"] = lo[keep], (hi - lo)[keep]
    spans["span_energy_j"] = spans["span_energy_j"] * share
    for name in COUNTS:
        spans[name] = np.rint(spans[name] * share).astype(np.int64)
    return replace(stats, **spans, **_totals(spans))


def merge(parts: list[Part], policy: str, last_arrival_s: float, wall_s: float) -> SimResult:
    """One result from the windows' parts: records in trace order, servers' spans joined (s, J)."""
    records = pd.concat([p.records for p in parts], ignore_index=True)
    ids = records["request_id"].to_numpy()
    if np.any(np.diff(ids) != 1) or (ids.size and ids[0] != 0):
        raise RuntimeError("windows do not own every request exactly once")
    servers = tuple(_join(group) for group in zip(*(p.servers for p in parts), strict=True))
    finish = records["finish_s"].to_numpy()
    makespan = max(float(np.nanmax(finish)) if np.isfinite(finish).any() else 0.0, last_arrival_s)
    return SimResult(policy, records, servers, makespan, wall_s)


def _join(group: tuple[ServerStats, ...]) -> ServerStats:
    """The same server in every window: its clipped spans in time order, totals recomputed."""
    first = group[0]
    spans: dict[str, Any] = {}
    for f in fields(first):
        if f.name.startswith("span_") and isinstance(getattr(first, f.name), np.ndarray):
            spans[f.name] = np.concatenate([getattr(s, f.name) for s in group])
    return replace(first, **spans, **_totals(spans))


def _totals(spans: dict[str, Any]) -> dict[str, Any]:
    """Steps, busy time (s), step energy (J) and peak step power (W) of a span log."""
    peak = spans["span_peak_w"]
    return {
        "steps": int(np.sum(spans["span_steps"])),
        "busy_s": float(np.sum(spans["span_s"])),
        "active_energy_j": float(np.sum(spans["span_energy_j"])),
        "peak_power_w": float(np.max(peak)) if peak.size else 0.0,
    }


def _on_ray(slices: list[pd.DataFrame], fleet: Fleet, policy: Policy, plan: tuple[Window, ...]) -> list[Part]:
    """One Ray task (one CPU) per window; results in window order."""
    ray = _ray()
    task = ray.remote(num_cpus=1)(simulate_window)
    fleet_ref, policy_ref = ray.put(fleet), ray.put(policy)
    return ray.get([task.remote(s, fleet_ref, policy_ref, w) for s, w in zip(slices, plan, strict=True)])


def _ray() -> Any:
    """Ray, connected: to an already initialised session, to RAY_ADDRESS, or else to a new local
    instance that listens on 127.0.0.1 only."""
    local = not os.environ.get("RAY_ADDRESS")
    if local and "ray" not in sys.modules:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when Ray is imported
    try:
        import ray
    except ImportError as e:
        raise ConfigError(RAY_MISSING.format("executor")) from e
    if not ray.is_initialized():
        if local:
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(log_to_driver=False)
    return ray


def _ray_installed() -> bool:
    if "ray" in sys.modules:
        return sys.modules["ray"] is not None
    return importlib.util.find_spec("ray") is not None

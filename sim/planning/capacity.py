"""Capacity search: the smallest fleet that meets a latency SLO for a trace at its load.

One pool is sized (the only one, or `capacity.pool`); the others keep their replicas. The search
gallops from its start (1 replica: 2, 4, 8, … ; up from a size that misses, down from one that
meets, the step doubling each time) until it brackets the answer, then bisects between the last
size that missed and the first that met it. It assumes more replicas never make latency worse
(true of the load-balancing routers up to noise); every probe is reported so a non-monotone case
shows.

Targets: `percentiles`: the `percentile`-th TTFT ≤ slo.ttft_s and TPOT ≤ slo.tpot_s over the
completed requests; `attainment`: at least `attainment` of all requests (rejected ones fail)
meet both.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from sim.config import SloConfig
from sim.policies.base import Policy
from sim.results.metrics import idle_energy_j, slo_attainment
from sim.schema import check
from sim.serving.fleet import Fleet
from sim.serving.run import SimResult, simulate_fleet

log = logging.getLogger(__name__)

TARGETS = ("percentiles", "attainment")


@dataclass(frozen=True)
class CapacityConfig:
    """The `capacity:` section: whether to search, the target, which pool, and the ceiling."""

    enabled: bool = False
    target: str = "percentiles"
    percentile: float = 99.0
    attainment: float = 0.99
    pool: str | None = None
    max_replicas: int = 256

    def __post_init__(self) -> None:
        check(self.target in TARGETS, "capacity.target", f"must be one of {TARGETS}, got {self.target!r}")
        check(0 < self.percentile <= 100, "capacity.percentile", f"must be in (0, 100], got {self.percentile}")
        check(0 < self.attainment <= 1, "capacity.attainment", f"must be in (0, 1], got {self.attainment}")
        check(self.max_replicas >= 1, "capacity.max_replicas", f"must be ≥ 1, got {self.max_replicas}")

    def describe(self, slo: SloConfig) -> str:
        """The target in words, with its numbers."""
        if self.target == "attainment":
            return f"≥ {self.attainment:.1%} of requests with TTFT ≤ {slo.ttft_s} s and TPOT ≤ {slo.tpot_s} s"
        p = f"p{self.percentile:g}"
        return f"{p} TTFT ≤ {slo.ttft_s} s and {p} TPOT ≤ {slo.tpot_s} s"


@dataclass(frozen=True)
class Probe:
    """One fleet size tried: the sized pool's replicas, all GPUs, latency (s), energy (J)."""

    replicas: int
    gpus: int
    ttft_s: float
    tpot_s: float
    attainment: float
    rejected: int
    energy_j: float
    met: bool


@dataclass(frozen=True)
class Capacity:
    """The search's answer (`met` False: not even `max_replicas` met the target) and its probes."""

    pool: str
    target: str
    replicas: int
    gpus: int
    met: bool
    energy_j: float
    probes: tuple[Probe, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for summary.json (probes sorted by size)."""
        out = asdict(self)
        out["probes"] = [asdict(p) for p in sorted(self.probes, key=lambda p: p.replicas)]
        return out


def probe(result: SimResult, replicas: int, slo: SloConfig, cfg: CapacityConfig, gpus: int | None = None) -> Probe:
    """Score one simulated fleet size against the target; `gpus`: the fleet's GPUs (default one
    per server)."""
    r = result.requests
    done = r["completed"].to_numpy()
    ttft = _percentile(r["ttft_s"].to_numpy()[done], cfg.percentile)
    tpot = _percentile(r["tpot_s"].to_numpy()[done], cfg.percentile)
    attainment = slo_attainment(r, slo)
    if cfg.target == "attainment":
        met = attainment >= cfg.attainment
    else:
        met = bool(done.any()) and ttft <= slo.ttft_s and (math.isnan(tpot) or tpot <= slo.tpot_s)
    energy = float(sum(s.active_energy_j for s in result.servers)) + idle_energy_j(result)
    gpus = len(result.servers) if gpus is None else gpus
    return Probe(replicas, gpus, ttft, tpot, attainment, int((~done).sum()), energy, met)


def _percentile(values: np.ndarray, q: float) -> float:
    v = values[np.isfinite(values)]
    return float(np.percentile(v, q)) if v.size else math.nan


def search_capacity(
    requests: pd.DataFrame,
    fleet: Fleet,
    policy: Policy,
    cfg: CapacityConfig,
    *,
    progress: bool = False,
    start: int = 1,
    quiet: bool = False,
) -> tuple[Capacity, SimResult]:
    """The smallest size of the sized pool that meets the target, and the simulation at that size.
    The search starts at `start` replicas (a size near the answer saves probes: the bands' replays
    start at the point estimate's).

    The SLO is the fleet's (`fleet.slo`). If `max_replicas` misses the target too, the answer is
    `max_replicas` with `met=False` and a warning. `quiet`: probes logged at debug level and no
    warning (the bands' replays: their caller counts the answers not met).
    """
    pool = fleet.pool(cfg.pool).name
    slo = fleet.slo
    probes: dict[int, Probe] = {}
    bar = _bar(progress)

    def run(n: int) -> tuple[bool, SimResult]:
        sized = fleet.resized(pool, n)
        result = simulate_fleet(requests, sized, policy)
        p = probes[n] = probe(result, n, slo, cfg, sized.gpus)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(replicas=n, met=p.met)
        log.log(logging.DEBUG if quiet else logging.INFO, "capacity probe: %s=%d → TTFT %.3g s, TPOT %.3g s, met=%s",
                pool, n, p.ttft_s, p.tpot_s, p.met)  # fmt: skip
        return p.met, result

    # lo: the largest size known to miss (0 serves no one); hi: the size tried last, or the smallest met
    lo, hi = 0, min(max(start, 1), cfg.max_replicas)
    met, result = run(hi)
    step = 1
    if met:  # gallop down until a size misses
        while hi - step >= 1:
            ok, trial = run(hi - step)
            if not ok:
                lo = hi - step
                break
            hi, result, step = hi - step, trial, 2 * step
    while not met and hi < cfg.max_replicas:  # gallop up (from 1: 2, 4, 8, …) until a size meets
        lo, hi, step = hi, min(hi + step, cfg.max_replicas), 2 * step
        met, result = run(hi)
    while met and hi - lo > 1:  # result stays the simulation at hi
        mid = (lo + hi) // 2
        ok, trial = run(mid)
        if ok:
            hi, result = mid, trial
        else:
            lo = mid
    if bar is not None:
        bar.close()
    answer = probes[hi]
    if not met and not quiet:
        log.warning(
            "capacity: %d replicas of pool %r do not meet %s (p%g TTFT %.3g s, TPOT %.3g s, attainment %.3f, "
            "%d rejected); raise capacity.max_replicas or relax the SLO",
            hi, pool, cfg.describe(slo), cfg.percentile, answer.ttft_s, answer.tpot_s, answer.attainment,
            answer.rejected,
        )  # fmt: skip
    return Capacity(pool, cfg.describe(slo), hi, answer.gpus, met, answer.energy_j, tuple(probes.values())), result


def _bar(enabled: bool) -> Any:
    from sim.console.progress import progress_bar

    bar = progress_bar(enabled, desc="capacity search", unit="probe", leave=False)
    return None if bar.disable else bar

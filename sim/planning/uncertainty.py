"""Bands on a run's headline figures: how far to trust the answer, by replaying it with what is
not known drawn at random.

Two sources, each switchable (`uncertainty.sources`):
- **calibration**: a derived oracle is off by as much as the calibration is on a model it never saw.
  Each replay scales every step's time and energy by a (time, energy) ratio pair drawn from the
  leave-one-model-out errors of the calibration the oracle's GPU rests on (`oracle.errors`; a model
  first, then one of its runs, so errors that go together are drawn together). Pools on GPUs of
  one calibration share the draw.
- **workload**: the trace is one sample of its traffic. Each replay serves a local block bootstrap
  of it (`traces.bootstrap`: `windows` windows of arrival time, each position drawing one of the
  windows within `reach` of it, so a peak stays where it was).

Every replay runs the policy and (with `compare_baseline`) the baseline on the same draw, so a
saving's band is of paired differences; with `capacity.enabled`, each replay searches its own
capacity, starting at the point answer. The band of a figure is a central interval of its replays
(their empirical quantiles, so a band's ends are replays' values: whole replicas stay whole): the
central `level` of them, or with a calibration band the wider `oracle.errors.corrected_level` of
`level` for the m models the errors come from (level·(m+1)/m: 0.964 of the replays for a 90 %
band from H100's 14 models), so that a model nobody measured lands inside about `level` of the
time; the point estimate stays the run on the trace and oracle as given, which need not lie at
the band's centre (the calibration's errors are not centred on 1). A saving whose band includes
zero is marked not significant. The draws come from their own random stream of the run's seed:
the same seed, the same bands. The replays (`sim.planning.band_replays`) run in this process, on
`threads` threads (the bands do not depend on how many), whatever `execution.mode` splits the run
itself into. Not perturbed: a summarization policy's own summarizer, and the policy's choices
(made from the trace as given).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from oracle.errors import HeldOutErrors, NoHeldOutErrorsError, calibration_of, corrected_level, held_out_for, scaled
from sim.results.summary import BANDED, SIGNIFICANT
from sim.schema import ConfigError, check
from sim.serving.fleet import Fleet
from traces.bootstrap import resample_windows

BANDS_FILE = "bands.csv"
"""Each replay's draw and figures, in the run's folder."""
SOURCES = ("calibration+workload", "calibration", "workload")
STREAM = 26
"""The draws' random stream beside the run's seed (the trace's sampling uses the seed alone)."""


def available_cores() -> int:
    """CPU cores this process may use (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class UncertaintyConfig:
    """The `uncertainty:` section: how many replays (0: no bands), the bands' level, what is drawn,
    the bootstrap's windows, how far (in windows) a position's draw may reach, and the threads the
    replays run on (0: one per CPU core this process may use, or in a sweep that runs jobs side by
    side the job's share, `sim.app.RunContext.cores`)."""

    samples: int = 64
    level: float = 0.9
    sources: str = "calibration+workload"
    windows: int = 20
    reach: int = 1
    threads: int = 0

    def __post_init__(self) -> None:
        check(self.samples >= 0, "uncertainty.samples", f"must be ≥ 0 (0: no bands), got {self.samples}")
        check(0 < self.level < 1, "uncertainty.level", f"must be in (0, 1), e.g. 0.9, got {self.level}")
        check(self.sources in SOURCES, "uncertainty.sources", f"must be one of {SOURCES}, got {self.sources!r}")
        check(self.windows >= 1, "uncertainty.windows", f"must be ≥ 1, got {self.windows}")
        check(self.reach >= 1, "uncertainty.reach", f"must be ≥ 1 (windows either side), got {self.reach}")
        check(self.threads >= 0, "uncertainty.threads", f"must be ≥ 0 (0: one per CPU core), got {self.threads}")
        check(not 0 < self.samples < 10, "uncertainty.samples",
              f"must be 0 or at least 10 for a band to mean anything, got {self.samples}")  # fmt: skip

    @property
    def enabled(self) -> bool:
        return self.samples > 0

    @property
    def workers(self) -> int:
        """Threads the replays run on: `threads`, or one per CPU core this process may use."""
        return self.threads or available_cores()

    def quantile_level(self, models: int | None = None) -> float:
        """The central share of the replays a band spans: `level`, or with a calibration band drawn
        from `models` models' errors its `oracle.errors.corrected_level`."""
        return self.level if models is None else corrected_level(self.level, models)

    def thin_tails(self, models: int | None = None) -> str | None:
        """Why the band's ends would rest on fewer than one replay each (`quantile_level` too high
        for `samples`), or None."""
        tail = (1.0 - self.quantile_level(models)) / 2.0
        if not self.enabled or tail * self.samples >= 1.0:
            return None
        need = math.ceil(1.0 / tail) if tail > 0 else math.inf
        return (
            f"uncertainty.level={self.level:g} spans {100 * (1 - 2 * tail):.3g} % of the replays, and with "
            f"{self.samples} replays each end of a band is the most extreme one, not a {100 * tail:.2g} % tail; "
            f"set uncertainty.samples to at least {need}"
        )

    @property
    def calibration(self) -> bool:
        return "calibration" in self.sources

    @property
    def workload(self) -> bool:
        return "workload" in self.sources


@dataclass(frozen=True)
class Draw:
    """One replay's unknowns: per calibration (measured GPU label) the (time, energy) ratios its
    oracles are scaled by, and the requests it serves."""

    scales: dict[str, tuple[float, float]]
    requests: pd.DataFrame


def calibration_errors(fleet: Fleet) -> dict[str, HeldOutErrors]:
    """The held-out errors of every calibration the fleet's oracles rest on, by label; a
    ConfigError naming the oracle and the way out when one has none."""
    out: dict[str, HeldOutErrors] = {}
    for pool in fleet.pools:
        try:
            label = calibration_of(pool.oracle)
            if label not in out:
                out[label] = held_out_for(pool.oracle)
        except NoHeldOutErrorsError as e:
            raise ConfigError(
                f"uncertainty.sources: {e}, so no calibration band can be drawn; set "
                "uncertainty.sources=workload (or uncertainty.samples=0)"
            ) from e
    return out


def draws(
    requests: pd.DataFrame, errors: Mapping[str, HeldOutErrors], cfg: UncertaintyConfig, seed: int
) -> Iterator[Draw]:
    """`cfg.samples` draws, from the stream (seed, STREAM)."""
    rng = np.random.default_rng((seed, STREAM))
    for _ in range(cfg.samples):
        scales = {}
        if cfg.calibration:
            for label, e in sorted(errors.items()):
                t, en = e.draw(rng, 1)
                scales[label] = (float(t[0]), float(en[0]))
        trace = resample_windows(requests, cfg.windows, rng, cfg.reach) if cfg.workload else requests
        yield Draw(scales, trace)


def drawn_fleet(fleet: Fleet, draw: Draw) -> Fleet:
    """The fleet with each pool's oracle scaled by its calibration's drawn ratios."""
    if not draw.scales:
        return fleet
    pools = tuple(replace(p, oracle=scaled(p.oracle, *draw.scales[calibration_of(p.oracle)])) for p in fleet.pools)
    return replace(fleet, pools=pools)


@dataclass(frozen=True)
class Band:
    """A figure's central `level` interval over the replays, and their median."""

    low: float
    high: float
    median: float

    @classmethod
    def of(cls, values: np.ndarray, level: float) -> Band:
        v = values[np.isfinite(values)]
        if not v.size:
            return cls(math.nan, math.nan, math.nan)
        tail = 100.0 * (1.0 - level) / 2.0
        lo, med, hi = np.percentile(v, [tail, 50.0, 100.0 - tail], method="inverted_cdf")  # replays' own values
        return cls(float(lo), float(hi), float(med))

    def includes_zero(self) -> bool:
        return self.low <= 0.0 <= self.high


def fewest_models(errors: Mapping[str, HeldOutErrors]) -> int | None:
    """The fewest models one of the calibrations' errors come from (None: no calibration drawn):
    what the bands' level is corrected by (`UncertaintyConfig.quantile_level`)."""
    return min((e.models for e in errors.values()), default=None)


def bands(
    samples: pd.DataFrame, cfg: UncertaintyConfig, errors: Mapping[str, HeldOutErrors] | None = None
) -> dict[str, Any]:
    """The summary.json `bands` section from the replays' figures (one row per replay, a column
    per `BANDED` name present) and the calibrations' errors they drew from (read only with a
    calibration source): level, the central share of the replays spanned
    (`cfg.quantile_level(fewest_models(errors))`), samples, sources, where the calibration errors
    come from and whether all of them are refined configurations' (`HeldOutErrors.refined`), then
    a {low, high, median} per figure (`significant` for a saving: its band excludes zero)."""
    errors = (errors or {}) if cfg.calibration else {}
    describe = "; ".join(e.describe() for _, e in sorted(errors.items()))
    spanned = cfg.quantile_level(fewest_models(errors))
    out: dict[str, Any] = {"level": cfg.level, "spanned": spanned, "samples": len(samples), "sources": cfg.sources}
    if describe:
        out["calibration"] = describe
        out["refined"] = all(e.refined for e in errors.values())  # every oracle drawn for was refined on its runs
    for name in BANDED:
        if name not in samples.columns:
            continue
        band = Band.of(samples[name].to_numpy(dtype=float), spanned)
        entry: dict[str, Any] = {"low": band.low, "high": band.high, "median": band.median}
        if name in SIGNIFICANT:
            entry["significant"] = not band.includes_zero() and math.isfinite(band.low)
        out[name] = entry
    return out

"""The bands' replays (`sim.planning.uncertainty` says what is drawn and how a band is read):
`replay_figures`, one replay's headline figures, and `replay_bands`, every draw's, computed on
`uncertainty.threads` threads (the compiled loops release the GIL, so replays overlap on several
cores) and returned in the draws' order, so the figures do not depend on how many.
"""

from __future__ import annotations

import logging
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pandas as pd

from oracle.errors import HeldOutErrors
from oracle.model import OracleRangeWarning
from sim.config import SloConfig
from sim.console.progress import progress_bar
from sim.planning.capacity import Capacity, CapacityConfig, search_capacity
from sim.planning.uncertainty import Draw, UncertaintyConfig, calibration_errors, drawn_fleet, draws
from sim.policies.base import Policy
from sim.results.metrics import run_summary, with_savings
from sim.results.summary import BANDED, Summary, lookup
from sim.serving.fleet import Fleet
from sim.serving.run import simulate_fleet
from sim.serving.run_warnings import RejectedRequestsWarning

log = logging.getLogger(__name__)


def replay_figures(
    policy: Policy,
    slo: SloConfig,
    capacity_cfg: CapacityConfig | None = None,
    capacity: Capacity | None = None,
    compare_baseline: bool = True,
) -> Callable[[pd.DataFrame, Fleet], dict[str, float]]:
    """One replay of the bands, as `replay_bands` calls it: the policy (at its own capacity under
    `capacity_cfg`, default `CapacityConfig()`, searched from the point answer `capacity`, when
    the run searched one) and, with `compare_baseline`, the baseline on the same draw and fleet;
    its figures by `BANDED` name."""

    def replay(requests: pd.DataFrame, fleet: Fleet) -> dict[str, float]:
        figures: dict[str, float] = {}
        if capacity is not None:
            cap, result = search_capacity(
                requests, fleet, policy, capacity_cfg or CapacityConfig(), start=capacity.replicas, quiet=True
            )
            figures |= {"capacity_replicas": cap.replicas, "capacity_gpus": cap.gpus, "capacity_met": cap.met}
            fleet = fleet.resized(cap.pool, cap.replicas)
        else:
            result = simulate_fleet(requests, fleet, policy)
        runs = [result]
        if compare_baseline and policy.name != "none":
            runs.append(simulate_fleet(requests, fleet, Policy()))
        horizon = max(r.makespan_s for r in runs)
        base = run_summary(runs[-1], slo, horizon) if len(runs) > 1 else None
        summary = Summary(run_summary(result, slo, horizon), {}, {}, baseline=base)
        if base is not None:
            summary = with_savings(summary, result, runs[-1])
        keys = {name: key for name, key in BANDED.items() if not key.startswith("capacity.")}
        if base is None:
            keys.pop("energy_savings_pct")
        data = summary.to_dict()  # once: every figure is read from it
        return figures | {name: lookup(data, key) for name, key in keys.items()}

    return replay


def replay_bands(
    requests: pd.DataFrame,
    fleet: Fleet,
    cfg: UncertaintyConfig,
    seed: int,
    replay: Callable[[pd.DataFrame, Fleet], dict[str, float]],
    *,
    progress: bool = True,
    errors: Mapping[str, HeldOutErrors] | None = None,
) -> pd.DataFrame:
    """Run `replay(requests, fleet)` (the figures of one replay, by `BANDED` name; `replay_figures`)
    on every draw; the replays' figures, one row each with the draw's ratios. `errors`: the
    calibrations' held-out errors by label (default: the shipped ones of the fleet's oracles;
    unread without a calibration source)."""
    if errors is None:
        errors = calibration_errors(fleet) if cfg.calibration else {}
    rows = []
    bar = progress_bar(progress, total=cfg.samples, desc="bands", unit="replay", leave=False)

    def run(i: int, draw: Draw) -> dict[str, float]:
        row: dict[str, float] = {"replay": i, "requests": len(draw.requests)}
        for label, (t, e) in sorted(draw.scales.items()):
            row[f"{label}_time_ratio"], row[f"{label}_energy_ratio"] = t, e
        return row | replay(draw.requests, drawn_fleet(fleet, draw))

    with warnings.catch_warnings():  # the run on the trace as given warned already
        warnings.simplefilter("ignore", OracleRangeWarning)
        warnings.simplefilter("ignore", RejectedRequestsWarning)
        for row in in_order(run, enumerate(draws(requests, errors, cfg, seed)), cfg.workers):
            rows.append(row)
            bar.update(1)
    bar.close()
    frame = pd.DataFrame(rows)
    if "capacity_met" in frame and not frame["capacity_met"].all():
        log.warning(
            "bands: %d of %d replays met the capacity target at no size up to capacity.max_replicas: their "
            "capacity counts as that ceiling, so the band's top end is a lower bound (bands.csv, capacity_met)",
            int((~frame["capacity_met"].astype(bool)).sum()), len(frame),
        )  # fmt: skip
    return frame


def in_order(
    fn: Callable[..., dict[str, float]], args: Iterable[tuple[Any, ...]], workers: int
) -> Iterator[dict[str, float]]:
    """`fn(*a)` for each `a` of `args`, in their order, computed on `workers` threads with at most
    2 × `workers` under way (so that no more draws, each a whole trace, are held at once)."""
    if workers <= 1:
        yield from (fn(*a) for a in args)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bands") as pool:
        pending: deque[Future[dict[str, float]]] = deque()
        for a in args:
            pending.append(pool.submit(fn, *a))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()

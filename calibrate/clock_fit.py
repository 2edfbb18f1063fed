"""Fit a GPU's clock parameters to runs measured at locked SM clocks and power caps (`grid=dvfs`).

The step model is fitted on the runs at the GPU's default settings (`oracle.fit.default_settings`)
and held fixed here. A run at SM clock f under a power cap P (W per GPU) is then predicted as the
simulator would serve it (`predict_runs`): the oracle at clock f (`oracle.clocks.at_clock`), each step
at the highest clock whose power fits the cap (`sim.engine.costs.StepCosts`, the engine's own rule), one
prefill step and one decode span per lockstep batch. Those predictions depend on three of the GPU's
`ClockSpec` parameters (`FITTED`): the share φ of above-idle power that scales with f·V(f)², the clock
below which the voltage stops falling, and the voltage there over the voltage at the maximum clock.
`ClockEstimator` fits them by bounded least squares on the runs' relative errors of energy and time
(both weigh the same), from several starting points. Not fitted: the supported clocks, each step
feature's compute-bound share (`oracle.clocks.COMPUTE_SHARE`) and the switch latency. A parameter the
runs do not move (a voltage floor above every measured clock, say) keeps the GPU's default, and the
report says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from oracle.clock_specs import ClockSpec
from oracle.clocks import at_clock, clock_spec_of
from oracle.fit import run_settings
from oracle.model import Oracle
from oracle.regress import mape_pct
from sim.engine.costs import StepCosts

FITTED: Final = ("dynamic_fraction", "floor_voltage_ratio", "voltage_floor_mhz")
"""The `ClockSpec` fields a clock fit estimates."""
RATIO_BOUNDS: Final = (0.2, 1.0)  # V_floor / V_max: below 0.2 no silicon of these GPUs runs
MOVES: Final = 1e-6
"""A parameter that changes no run's relative prediction by more than this near the fit (`_flat`)
is not determined by the runs."""


def predict_runs(oracle: Oracle, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Time (s) and energy (J) of each measured run at its clock and cap, as the simulator serves
    it: `num_requests` identical requests in lockstep batches of `batch_size`, each batch one
    prefill step then `n_out` − 1 decode steps (`oracle.features.run_features`' shape), with the
    oracle's clock parameters (`Oracle.clock`, else its GPU's). A cap above the oracle's board
    limit is the board limit; a run without a cap is throttled only by the board limit."""
    clock, cap = run_settings(rows)
    lengths = rows[["n_in", "n_out", "batch_size", "num_requests"]].to_numpy(np.int64)
    costs: dict[tuple[float, float], StepCosts] = {}
    time_s, energy_j = np.empty(len(rows)), np.empty(len(rows))
    for i, (f, p) in enumerate(zip(clock, cap, strict=True)):
        key = (f, p)
        if key not in costs:
            costs[key] = _costs(oracle, f, p)
        time_s[i], energy_j[i] = _run(costs[key], *(int(v) for v in lengths[i]))
    return time_s, energy_j


def _costs(oracle: Oracle, clock_mhz: float, cap_w: float) -> StepCosts:
    """The step costs of `oracle` at a locked clock (NaN: its own) under a cap (W per GPU; NaN: none)."""
    o = at_clock(oracle, None if math.isnan(clock_mhz) else clock_mhz)
    if not math.isnan(cap_w):
        limit = cap_w * o.gpus
        o = replace(o, power_limit_w=limit if o.power_limit_w is None else min(limit, o.power_limit_w))
    return StepCosts.from_oracle(o)


def _run(costs: StepCosts, n_in: int, n_out: int, batch_size: int, num_requests: int) -> tuple[float, float]:
    """Time (s) and energy (J) of one run: its full batches, then the rest in one batch."""
    cap = min(batch_size, num_requests)
    full, rest = divmod(num_requests, cap)
    time_s = energy_j = 0.0
    for b, count in ((cap, full), (rest, 1 if rest else 0)):
        if count == 0:
            continue
        t, e, _, _ = costs.step(0, 0, b, b * n_in, b * n_in * (n_in + 1) // 2)
        if n_out > 1:
            dt, de, _, _, _ = costs.decode(b, b * (n_in + 1), n_out - 1)
            t, e = t + dt, e + de
        time_s += count * t
        energy_j += count * e
    return time_s, energy_j


@dataclass(frozen=True)
class ClockFitReport:
    """What a clock fit found: the runs it used, the fitted and default parameters, and the mean
    absolute percentage error (%) of the runs' energy and time with each."""

    runs: int
    clocks_mhz: tuple[float, ...]  # the locked clocks measured (the maximum where none was set)
    caps_w: tuple[float, ...]  # the power caps measured, W per GPU
    fitted: ClockSpec
    default: ClockSpec
    undetermined: tuple[str, ...]  # parameters the runs did not move: kept at the default
    energy_mape_pct: float
    time_mape_pct: float
    default_energy_mape_pct: float
    default_time_mape_pct: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the oracle's `fit.clock`)."""
        out = asdict(self)
        out["fitted"] = {k: out["fitted"][k] for k in FITTED}
        out["default"] = {k: out["default"][k] for k in FITTED}
        out["clocks_mhz"], out["caps_w"] = list(self.clocks_mhz), list(self.caps_w)
        out["undetermined"] = list(self.undetermined)
        return out

    def text(self) -> str:
        """The report's lines for the console."""
        caps = ", ".join(f"{c:g}" for c in self.caps_w) or "none"
        clocks = ", ".join(f"{c:g}" for c in self.clocks_mhz)
        lines = [
            f"clock parameters fitted on {self.runs} runs at clocks {clocks} MHz, caps {caps} W "
            "(step model held fixed):",
            f"  {'parameter':<20} {'fitted':>9} {'default':>9}",
        ]
        for k in FITTED:
            note = "  (not determined by these runs: default kept)" if k in self.undetermined else ""
            lines.append(f"  {k:<20} {getattr(self.fitted, k):>9.4g} {getattr(self.default, k):>9.4g}{note}")
        lines.append(
            f"  MAPE on these runs: energy {self.energy_mape_pct:.2f} % "
            f"(defaults {self.default_energy_mape_pct:.2f} %), "
            f"time {self.time_mape_pct:.2f} % (defaults {self.default_time_mape_pct:.2f} %; "
            "time moves with the clock by the features' compute-bound shares, which are not fitted)"
        )
        return "\n".join(lines)


class ClockEstimator:
    """Fits the `FITTED` clock parameters with the step model of `oracle` held fixed, after
    scikit-learn's conventions: `fit(rows)` sets `spec_` (a `ClockSpec`) and `report_`;
    `predict(rows)` gives each run's (time s, energy J) with them."""

    def __init__(self, oracle: Oracle, starts: int = 3) -> None:
        self.oracle = oracle
        self.starts = starts
        self.spec_: ClockSpec | None = None
        self.report_: ClockFitReport | None = None

    def _spec(self, default: ClockSpec, p: np.ndarray) -> ClockSpec:
        return replace(
            default, dynamic_fraction=float(p[0]), floor_voltage_ratio=float(p[1]), voltage_floor_mhz=float(p[2])
        )

    def fit(self, rows: pd.DataFrame) -> ClockEstimator:
        """Fit on runs at locked clocks or caps (columns of `calibrate.table`); ValueError when
        there are none, or when a run's energy or time is not positive."""
        if rows.empty:
            raise ValueError("no runs at a locked clock or a power cap to fit the clock parameters on")
        measured_e, measured_t = rows["energy_j"].to_numpy(float), rows["duration_s"].to_numpy(float)
        if not (np.all(measured_e > 0) and np.all(measured_t > 0)):
            raise ValueError("every run needs a positive energy_j and duration_s to fit clock parameters on")
        default = clock_spec_of(self.oracle)
        lower = np.array([0.0, RATIO_BOUNDS[0], default.min_mhz], dtype=float)
        upper = np.array([1.0, RATIO_BOUNDS[1], default.max_mhz], dtype=float)
        start = np.array([getattr(default, k) for k in FITTED], dtype=float)

        def residuals(p: np.ndarray) -> np.ndarray:
            t, e = predict_runs(replace(self.oracle, clock=self._spec(default, p)), rows)
            return np.concatenate([e / measured_e - 1.0, t / measured_t - 1.0])

        free = np.ones(start.size, dtype=bool)
        best = self._least_squares(residuals, start, free, lower, upper)
        free = ~_flat(residuals, best, lower, upper)
        if not free.all():  # refit the others with those at their defaults
            best = self._least_squares(residuals, start, free, lower, upper)
        best[2] = round(best[2])  # a whole MHz, as the clock tables give it
        spec = self._spec(default, best)
        t, e = predict_runs(replace(self.oracle, clock=spec), rows)
        t0, e0 = predict_runs(replace(self.oracle, clock=default), rows)
        clock, cap = run_settings(rows)
        self.spec_ = spec
        self.report_ = ClockFitReport(
            runs=len(rows),
            clocks_mhz=tuple(sorted(set(np.where(np.isnan(clock), default.max_mhz, clock).tolist()))),
            caps_w=tuple(sorted(set(cap[~np.isnan(cap)].tolist()))),
            fitted=spec,
            default=default,
            undetermined=tuple(k for k, f in zip(FITTED, free, strict=True) if not f),
            energy_mape_pct=mape_pct(measured_e, e),
            time_mape_pct=mape_pct(measured_t, t),
            default_energy_mape_pct=mape_pct(measured_e, e0),
            default_time_mape_pct=mape_pct(measured_t, t0),
        )
        return self

    def _least_squares(
        self, residuals: Any, start: np.ndarray, free: np.ndarray, lower: np.ndarray, upper: np.ndarray
    ) -> np.ndarray:
        """The best of `starts` bounded least-squares fits of the `free` parameters (the others at
        `start`): from `start`, then from points spread inside the bounds."""
        spread = [lower + (upper - lower) * q for q in np.linspace(0.25, 0.75, max(self.starts - 1, 0))]
        if not free.any():
            return start
        best, best_cost = start, math.inf
        for x0 in (start, *spread):
            x0 = np.where(free, x0, start)
            fit = least_squares(
                lambda q, x0=x0: residuals(_put(x0, free, q)),
                x0[free],
                bounds=(lower[free], upper[free]),
                x_scale=(upper - lower)[free],
                diff_step=1e-4,
            )
            if fit.cost < best_cost:
                best, best_cost = _put(x0, free, fit.x), fit.cost
        return best

    def predict(self, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(time s, energy J) of each run with the fitted parameters (`predict_runs`)."""
        if self.spec_ is None:
            raise RuntimeError("ClockEstimator is not fitted: call fit(rows) first")
        return predict_runs(replace(self.oracle, clock=self.spec_), rows)


def _flat(residuals: Any, x: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Which parameters the runs do not determine at `x`: moved a twentieth of their range one way
    or the other (inside the bounds), no run's relative prediction changes by more than `MOVES`
    (a voltage floor above every measured clock, say, could sit anywhere above them)."""
    at = residuals(x)
    flat = np.zeros(x.size, dtype=bool)
    for i in range(x.size):
        step = (upper[i] - lower[i]) / 20
        for to in (np.clip(x[i] - step, lower[i], upper[i]), np.clip(x[i] + step, lower[i], upper[i])):
            if to != x[i] and np.max(np.abs(residuals(_put(x, np.arange(x.size) == i, np.array([to]))) - at)) <= MOVES:
                flat[i] = True
    return flat


def _put(x: np.ndarray, mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[mask] = values
    return out

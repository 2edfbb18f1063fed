"""Fit an oracle to a measurement table, and score it against the baselines prior work uses.

Each measured run (num_requests identical requests of (n_in, n_out) in batches of batch_size) is
the sum of its steps, so its energy (J) and duration (s) are linear in the step coefficients:
non-negative least squares on relative error (`oracle.regress`). The time coefficients are fitted
first; the energy coefficients are then fitted under the physical limit that every representative
step's implied power (energy / time, W) lies between the idle power and the power limit, as
linear inequalities of the least squares. A table of one batch size is fitted with the shared
step cost merged into the per-sequence ones (`oracle.identify`): exact at that batch, its batch
scaling undetermined, which the report and the oracle say. A table that cannot determine the
coefficients (too few distinct points, or points that never vary what separates two features) is
refused. It is fitted on the runs at the GPU's default settings (no clock locked below the
maximum, no power cap below the board limit, `default_settings`); runs at other settings fit the
clock parameters (`calibrate.clock_fit`), and a table of them is refused here with that pointer.
Baselines, fitted and scored on the same rows: the linear per-request model a·n_in + b·n_out + c,
a FLOPs-only model (energy proportional to linear-layer and attention FLOPs), and the ideal bound
FLOPs × TDP / peak FLOP/s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from oracle import features as F
from oracle.arch import GpuSpec, ModelSpec, find_gpu, find_model
from oracle.clocks import ClockError, clock_spec
from oracle.identify import (
    batch_note,
    fitted_batch,
    identifiable_columns,
    merge_shared,
    run_design,
)
from oracle.model import CalibratedRange, MemorySpec, Oracle, representative_steps
from oracle.regress import ConstrainedRelativeLSQ, NotFittedError, RelativeNNLS, cross_val_mape_pct, mape_pct
from oracle.run_power import check_run_power

log = logging.getLogger(__name__)


def run_settings(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each run's locked SM clock (MHz) and power cap (W per GPU); NaN where not set."""
    n = len(table)
    clock = table["clock_mhz"].to_numpy(float) if "clock_mhz" in table else np.full(n, np.nan)
    cap = table["power_limit_w"].to_numpy(float) if "power_limit_w" in table else np.full(n, np.nan)
    return clock, cap


def default_settings(table: pd.DataFrame, gpu: str) -> np.ndarray:
    """Which runs were measured at the GPU's default settings: `clock_mhz` empty or the GPU's
    maximum SM clock (`oracle.clock_specs`), `power_limit_w` empty or at least its board limit
    (`oracle/data/gpus/`). A GPU without clock parameters has default runs only where `clock_mhz`
    is empty; one without a known board limit, only where `power_limit_w` is empty."""
    clock, cap = run_settings(table)
    try:
        top = float(clock_spec(gpu).max_mhz)
    except ClockError:
        top = np.inf
    spec = find_gpu(gpu)
    board = np.inf if spec is None else spec.power_limit_w
    return (np.isnan(clock) | (clock >= top)) & (np.isnan(cap) | (cap >= board))


def power_limits(
    table: pd.DataFrame, time_coef: np.ndarray, idle_power_w: float, power_limit_w: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Linear limits (G, h) on energy coefficients c: idle·t ≤ x·c ≤ limit·t for representative steps.

    x are the steps of `representative_steps` over the table's range, t = x·time_coef their
    fitted durations (s); so the implied step power x·c / t stays within [idle, limit] W.
    """
    steps = representative_steps(calibrated_range(table))
    t = steps @ time_coef
    G, h = [-steps], [-idle_power_w * t]
    if power_limit_w is not None:
        G.append(steps)
        h.append(power_limit_w * t)
    return np.vstack(G), np.concatenate(h)


def calibrated_range(table: pd.DataFrame) -> CalibratedRange:
    """The (n_in, n_out, batch) range a table measured: batch [B, B] for a one-batch table."""
    batch = fitted_batch(table)
    return CalibratedRange(
        n_in=(float(table["n_in"].min()), float(table["n_in"].max())),
        n_out=(float(table["n_out"].min()), float(table["n_out"].max())),
        batch=(1.0, float(table["batch_size"].max())) if batch is None else (batch, batch),
    )


class OracleEstimator:
    """Step-coefficient estimator over measurement tables: `fit(table)` → energy_coef_, time_coef_.

    idle_power_w, power_limit_w (W): when given, the energy fit keeps every representative step's
    implied power within [idle, limit] (see `power_limits`); energy_coef_unconstrained_ holds the
    plain fit for comparison. Refuses tables that cannot determine the model; a one-batch table is
    fitted with const merged (`identifiable_columns`): columns_ are the fitted step features and
    batch_ the table's one batch size (None for a table of several).
    """

    def __init__(self, idle_power_w: float | None = None, power_limit_w: float | None = None) -> None:
        self.idle_power_w = idle_power_w
        self.power_limit_w = power_limit_w
        self.energy_coef_: np.ndarray | None = None
        self.energy_coef_unconstrained_: np.ndarray | None = None
        self.time_coef_: np.ndarray | None = None
        self.limits_: tuple[np.ndarray, np.ndarray] | None = None
        self.columns_: list[int] = list(range(F.N_FEATURES))
        self.batch_: float | None = None

    def fit(self, table: pd.DataFrame) -> OracleEstimator:
        """Fit energy (J) and time (s) coefficients to the table's runs; returns self."""
        self.columns_, self.batch_ = identifiable_columns(table)
        X = self.design(table)
        self.time_coef_ = self._full(RelativeNNLS().fit(X, table["duration_s"]).coef_)
        if self.idle_power_w is not None or self.power_limit_w is not None:
            G, h = power_limits(table, self.time_coef_, self.idle_power_w or 0.0, self.power_limit_w)
            self.limits_ = G[:, self.columns_], h
        self.energy_coef_unconstrained_ = self._full(RelativeNNLS().fit(X, table["energy_j"]).coef_)
        self.energy_coef_ = self._full(self.energy_model().fit(X, table["energy_j"]).coef_)
        return self

    def design(self, table: pd.DataFrame) -> np.ndarray:
        """The fitted columns of the table's summed step features (rows, len(columns_))."""
        return run_design(table)[:, self.columns_]

    def _full(self, coef: np.ndarray | None) -> np.ndarray:
        """Six step coefficients from a fit over columns_ (const merged back for a one-batch table)."""
        assert coef is not None
        return coef if self.batch_ is None else merge_shared(coef, self.batch_)

    def energy_model(self) -> RelativeNNLS:
        """A fresh energy regressor over columns_, under the fitted power limits (plain NNLS without them)."""
        return RelativeNNLS() if self.limits_ is None else ConstrainedRelativeLSQ(*self.limits_)

    def predict_energy(self, table: pd.DataFrame) -> np.ndarray:
        """Predicted energy (J) of each run."""
        if self.energy_coef_ is None:
            raise NotFittedError("OracleEstimator is not fitted yet: call fit(table) first")
        return run_design(table) @ self.energy_coef_


def run_flops(table: pd.DataFrame, m: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Linear-layer and attention FLOPs of every run (computed for all tokens, as prior work does)."""
    tokens = table["num_requests"].to_numpy(float) * (table["n_in"] + table["n_out"]).to_numpy(float)
    linear = 2.0 * m.weight_params * tokens
    pairs = F.attn_pairs(table["n_in"] + table["n_out"])
    attn = m.attn_flops_per_pair(m.attn_layers) * pairs * table["num_requests"].to_numpy(float)
    return linear, attn


@dataclass(frozen=True)
class Scores:
    """In-sample and k-fold cross-validated MAPE (%)."""

    mape_pct: float
    cv_mape_pct: float


@dataclass(frozen=True)
class PowerConstraint:
    """What keeping implied step power within [idle_power_w, power_limit_w] (W) cost the energy fit.

    unconstrained_*: the plain fit's in-sample MAPE (%) and implied step power range (W) over the
    representative steps; active: whether the plain fit broke the limits, so that they moved the
    coefficients (comparing coefficients instead flags solver round-off on a coefficient near 0).
    """

    idle_power_w: float
    power_limit_w: float | None
    unconstrained_mape_pct: float
    unconstrained_power_w: tuple[float, float]
    constrained_mape_pct: float
    power_w: tuple[float, float]
    active: bool

    @property
    def cost_pct(self) -> float:
        """Extra in-sample MAPE (percentage points) the limits cost."""
        return self.constrained_mape_pct - self.unconstrained_mape_pct

    def text(self) -> str:
        """One console line."""
        limit = "unknown" if self.power_limit_w is None else f"{self.power_limit_w:.0f} W"
        lo, hi = self.unconstrained_power_w
        if not self.active:
            return (
                f"power constraint [{self.idle_power_w:.0f} W, {limit}]: not binding "
                f"(unconstrained implied power {lo:.0f}–{hi:.0f} W)"
            )
        clo, chi = self.power_w
        return (
            f"power constraint [{self.idle_power_w:.0f} W, {limit}]: binding; unconstrained fit implied "
            f"{lo:.0f}–{hi:.0f} W at MAPE {self.unconstrained_mape_pct:.2f} %, constrained {clo:.0f}–{chi:.0f} W "
            f"at MAPE {self.constrained_mape_pct:.2f} % (cost {self.cost_pct:+.2f} points)"
        )


@dataclass
class FitReport:
    """What a fit measured: its errors, the baselines' errors, θ at batch 1 and n_out*."""

    rows: int
    energy: Scores
    time: Scores
    baselines: dict[str, Scores] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    theta_b1: list[float] = field(default_factory=list)
    n_out_star: dict[int, float] = field(default_factory=dict)
    power: PowerConstraint | None = None
    fitted_batch: float | None = None  # the one batch size of a one-batch table (`oracle.identify`)

    @property
    def batch_note(self) -> str | None:
        """The caveat of a one-batch fit: batch scaling undetermined; None when several were measured."""
        return None if self.fitted_batch is None else batch_note(self.fitted_batch)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict; `mape_pct` and `cv_mape_pct` are the oracle's energy figures."""
        return {
            "rows": self.rows,
            "mape_pct": self.energy.mape_pct,
            "cv_mape_pct": self.energy.cv_mape_pct,
            "time_mape_pct": self.time.mape_pct,
            "time_cv_mape_pct": self.time.cv_mape_pct,
            "baselines": {k: vars(v) for k, v in self.baselines.items()},
            "skipped_baselines": self.skipped,
            "theta_b1_j": self.theta_b1,
            "n_out_star_b1": {str(k): v for k, v in self.n_out_star.items()},
            "power_constraint": None if self.power is None else {**asdict(self.power), "cost_pct": self.power.cost_pct},
            "fitted_batch": self.fitted_batch,
            "batch_scaling": self.batch_note or "fitted over several batch sizes",
        }

    def text(self) -> str:
        """A console report."""
        lines = [
            f"rows: {self.rows}",
            f"{'model':<22}{'MAPE %':>10}{'CV MAPE %':>12}",
            f"{'sweetspot (energy)':<22}{self.energy.mape_pct:>10.2f}{self.energy.cv_mape_pct:>12.2f}",
            f"{'sweetspot (time)':<22}{self.time.mape_pct:>10.2f}{self.time.cv_mape_pct:>12.2f}",
        ]
        lines += [f"{name:<22}{s.mape_pct:>10.2f}{s.cv_mape_pct:>12.2f}" for name, s in self.baselines.items()]
        lines += [f"{name:<22} skipped: {why}" for name, why in self.skipped.items()]
        lines.append("theta at batch 1 (J): " + ", ".join(f"θ{i + 1}={t:.4g}" for i, t in enumerate(self.theta_b1)))
        lines.append("n_out* at batch 1: " + ", ".join(f"n_in={k}: {v:.0f}" for k, v in self.n_out_star.items()))
        if self.power is not None:
            lines.append(self.power.text())
        if self.batch_note is not None:
            lines.append(f"caveat: {self.batch_note}")
        return "\n".join(lines)


def _score(
    X: np.ndarray,
    y: np.ndarray,
    fitted: np.ndarray,
    folds: int,
    seed: int,
    make: Callable[[], RelativeNNLS] = RelativeNNLS,
) -> Scores:
    """In-sample MAPE of the fitted values, and k-fold CV MAPE of fresh `make()` models on X."""
    return Scores(mape_pct(y, fitted), cross_val_mape_pct(make, X, y, folds, seed))


def _power_report(
    est: OracleEstimator,
    table: pd.DataFrame,
    X: np.ndarray,
    y: np.ndarray,
    idle: float,
    limit: float | None,
    constrained_mape: float,
) -> PowerConstraint:
    """Implied power (W) and in-sample MAPE (%) of the fit with and without the power limits."""
    assert est.energy_coef_ is not None and est.energy_coef_unconstrained_ is not None and est.time_coef_ is not None
    steps = representative_steps(calibrated_range(table))
    t = steps @ est.time_coef_
    with np.errstate(divide="ignore", invalid="ignore"):
        free = (steps @ est.energy_coef_unconstrained_) / t
        bound = (steps @ est.energy_coef_) / t
    return PowerConstraint(
        idle_power_w=idle,
        power_limit_w=limit,
        unconstrained_mape_pct=mape_pct(y, X @ est.energy_coef_unconstrained_),
        unconstrained_power_w=(float(np.nanmin(free)), float(np.nanmax(free))),
        constrained_mape_pct=constrained_mape,
        power_w=(float(np.nanmin(bound)), float(np.nanmax(bound))),
        active=bool(
            np.nanmin(free) < idle * (1 - 1e-9) or (limit is not None and np.nanmax(free) > limit * (1 + 1e-9))
        ),
    )


def _scores(X: np.ndarray, y: np.ndarray, folds: int, seed: int) -> Scores:
    return _score(X, y, RelativeNNLS().fit(X, y).predict(X), folds, seed)


def baselines(
    table: pd.DataFrame, model: ModelSpec | None, gpu: GpuSpec | None, folds: int, seed: int
) -> tuple[dict[str, Scores], dict[str, str]]:
    """Scores of the baseline models on the same rows, and the ones skipped with the reason."""
    y = table["energy_j"].to_numpy(float)
    num = table["num_requests"].to_numpy(float)
    out = {
        "linear a·n_in+b·n_out+c": _scores(
            num[:, None] * np.column_stack([table["n_in"], table["n_out"], np.ones(len(table))]), y, folds, seed
        )
    }
    skipped = {}
    if model is None:
        why = f"model {table['model'].iloc[0]!r} names no architecture in oracle/data/models/"
        skipped["flops-only"] = why
        skipped["ideal FLOPs×TDP/peak"] = why
        return out, skipped
    linear, attn = run_flops(table, model)
    out["flops-only"] = _scores(np.column_stack([linear, attn]), y, folds, seed)
    if gpu is None:
        skipped["ideal FLOPs×TDP/peak"] = f"GPU {table['gpu'].iloc[0]!r} is not in oracle/data/gpus/"
    else:
        ideal = (linear + attn) * gpu.power_limit_w / gpu.peak_flops
        err = mape_pct(y, ideal)
        out["ideal FLOPs×TDP/peak"] = Scores(err, err)
    return out, skipped


def fit_oracle(
    table: pd.DataFrame,
    name: str | None = None,
    idle_power_w: float | None = None,
    folds: int = 5,
    seed: int = 0,
    n_in_report: tuple[int, ...] = (128, 512, 1024, 2048, 4096),
) -> tuple[Oracle, FitReport]:
    """Fit an oracle to a validated table (one model, GPU and backend) and score it and the baselines.

    A table whose runs imply a power no GPU draws (a unit mistake) is refused first (`check_run_power`).
    """
    for col in ("model", "gpu", "backend"):
        if table[col].nunique() != 1:
            raise ValueError(
                f"the table mixes several values of {col!r} ({sorted(table[col].unique())}); fit one at a time"
            )
    model_name, gpu_name, backend = (str(table[c].iloc[0]) for c in ("model", "gpu", "backend"))
    other = int((~default_settings(table, gpu_name)).sum())
    if other:
        raise ValueError(
            f"{other} of {len(table)} runs were measured at a locked SM clock or a power cap (columns clock_mhz, "
            "power_limit_w): the step model is fitted on runs at the GPU's default settings only; "
            "`python -m calibrate.fit` fits both (`oracle.fit.default_settings` selects the rows)"
        )
    model, gpu = find_model(model_name), find_gpu(gpu_name)
    idle, limit = _idle_power(table, gpu, idle_power_w), _power_limit(table, gpu)
    if limit is not None and not 0 <= idle < limit:
        raise ValueError(
            f"idle power {idle:g} W (column idle_power_w, or idle_power_w=) must be ≥ 0 and below the power "
            f"limit {limit:g} W (column power_limit_w, else the GPU datasheet): check the measurements"
        )
    check_run_power(table, idle, limit)
    est = OracleEstimator(idle_power_w=idle, power_limit_w=limit).fit(table)
    assert est.energy_coef_ is not None and est.time_coef_ is not None
    X, X_full = est.design(table), run_design(table)
    y = table["energy_j"].to_numpy(float)
    energy = _score(X, y, X_full @ est.energy_coef_, folds, seed, est.energy_model)
    time = _score(X, table["duration_s"].to_numpy(float), X_full @ est.time_coef_, folds, seed)
    base, skipped = baselines(table, model, gpu, folds, seed)
    power = _power_report(est, table, X_full, y, idle, limit, energy.mape_pct)
    oracle = Oracle(
        name=name or f"{model_name.split('/')[-1].lower()}_{backend}",
        model=model_name,
        gpu=gpu_name,
        backend=backend,
        energy_coef_j=est.energy_coef_,
        time_coef_s=est.time_coef_,
        idle_power_w=idle,
        power_limit_w=limit,
        calibrated=calibrated_range(table),
        memory=None
        if model is None or gpu is None
        else MemorySpec(
            model.weight_bytes,
            model.kv_bytes_per_token,
            gpu.memory_bytes,
            sampler_bytes_per_seq=model.sampler_bytes_per_seq,
        ),
    )
    report = FitReport(
        rows=len(table),
        energy=energy,
        time=time,
        baselines=base,
        skipped=skipped,
        theta_b1=[float(t) for t in oracle.theta(1)],
        n_out_star={n: float(oracle.optimal_output(n, check_range=False)) for n in n_in_report},
        power=power,
        fitted_batch=est.batch_,
    )
    oracle.fit = report.as_dict()
    return oracle, report


def _power_limit(table: pd.DataFrame, gpu: GpuSpec | None) -> float | None:
    """The measured runs' power limit (W), else the GPU's datasheet limit, else unknown."""
    if "power_limit_w" in table and table["power_limit_w"].notna().any():
        return float(table["power_limit_w"].median())
    return gpu.power_limit_w if gpu else None


def _idle_power(table: pd.DataFrame, gpu: GpuSpec | None, given: float | None) -> float:
    if given is not None:
        return float(given)
    if "idle_power_w" in table and table["idle_power_w"].notna().any():
        return float(table["idle_power_w"].median())
    if gpu is not None:
        log.warning("no idle_power_w column: using the %s datasheet idle power %.0f W", gpu.name, gpu.idle_power_w)
        return gpu.idle_power_w
    log.warning("no idle_power_w column and unknown GPU: idle power set to 0 W; pass idle_power_w= to set it")
    return 0.0

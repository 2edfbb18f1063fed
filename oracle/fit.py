"""Fit an oracle to a measurement table, and score it against the baselines prior work uses.

Each measured run (num_requests identical requests of (n_in, n_out) in batches of batch_size) is
the sum of its steps, so its energy (J) and duration (s) are linear in the step coefficients:
non-negative least squares on relative error (`oracle.regress`). Baselines, fitted and scored on
the same rows: the linear per-request model a·n_in + b·n_out + c, a FLOPs-only model (energy
proportional to linear-layer and attention FLOPs), and the ideal bound FLOPs × TDP / peak FLOP/s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from oracle import features as F
from oracle.arch import GpuSpec, ModelSpec, find_gpu, find_model
from oracle.model import CalibratedRange, MemorySpec, Oracle
from oracle.regress import NotFittedError, RelativeNNLS, cross_val_mape_pct, mape_pct

log = logging.getLogger(__name__)


def run_design(table: pd.DataFrame) -> np.ndarray:
    """Summed step features of every run in the table (rows, 6)."""
    return F.run_features(table["n_in"], table["n_out"], table["batch_size"], table["num_requests"])


class OracleEstimator:
    """Step-coefficient estimator over measurement tables: `fit(table)` → energy_coef_, time_coef_."""

    def __init__(self) -> None:
        self.energy_coef_: np.ndarray | None = None
        self.time_coef_: np.ndarray | None = None

    def fit(self, table: pd.DataFrame) -> OracleEstimator:
        """Fit energy (J) and time (s) coefficients to the table's runs; returns self."""
        X = run_design(table)
        self.energy_coef_ = RelativeNNLS().fit(X, table["energy_j"]).coef_
        self.time_coef_ = RelativeNNLS().fit(X, table["duration_s"]).coef_
        return self

    def predict_energy(self, table: pd.DataFrame) -> np.ndarray:
        """Predicted energy (J) of each run."""
        if self.energy_coef_ is None:
            raise NotFittedError("OracleEstimator is not fitted yet: call fit(table) first")
        return run_design(table) @ self.energy_coef_

    def predict_time(self, table: pd.DataFrame) -> np.ndarray:
        """Predicted duration (s) of each run."""
        if self.time_coef_ is None:
            raise NotFittedError("OracleEstimator is not fitted yet: call fit(table) first")
        return run_design(table) @ self.time_coef_


def run_flops(table: pd.DataFrame, m: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Linear-layer and attention FLOPs of every run (computed for all tokens, as prior work does)."""
    tokens = table["num_requests"].to_numpy(float) * (table["n_in"] + table["n_out"]).to_numpy(float)
    linear = 2.0 * m.weight_params * tokens
    pairs = F.attn_pairs(table["n_in"] + table["n_out"])
    attn = m.attn_flops_per_pair(m.num_layers) * pairs * table["num_requests"].to_numpy(float)
    return linear, attn


@dataclass(frozen=True)
class Scores:
    """In-sample and k-fold cross-validated MAPE (%)."""

    mape_pct: float
    cv_mape_pct: float


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
        return "\n".join(lines)


def _score(X: np.ndarray, y: np.ndarray, fitted: np.ndarray, folds: int, seed: int) -> Scores:
    """In-sample MAPE of the fitted values, and k-fold CV MAPE of a relative NNLS on X."""
    return Scores(mape_pct(y, fitted), cross_val_mape_pct(RelativeNNLS, X, y, folds, seed))


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
        why = f"model {table['model'].iloc[0]!r} names no architecture in conf/model/"
        skipped["flops-only"] = why
        skipped["ideal FLOPs×TDP/peak"] = why
        return out, skipped
    linear, attn = run_flops(table, model)
    out["flops-only"] = _scores(np.column_stack([linear, attn]), y, folds, seed)
    if gpu is None:
        skipped["ideal FLOPs×TDP/peak"] = f"GPU {table['gpu'].iloc[0]!r} is not in conf/gpu/"
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
    """Fit an oracle to a validated table (one model, GPU and backend) and score it and the baselines."""
    for col in ("model", "gpu", "backend"):
        if table[col].nunique() != 1:
            raise ValueError(
                f"the table mixes several values of {col!r} ({sorted(table[col].unique())}); fit one at a time"
            )
    model_name, gpu_name, backend = (str(table[c].iloc[0]) for c in ("model", "gpu", "backend"))
    model, gpu = find_model(model_name), find_gpu(gpu_name)
    est = OracleEstimator().fit(table)
    X = run_design(table)
    energy = _score(X, table["energy_j"].to_numpy(float), X @ est.energy_coef_, folds, seed)
    time = _score(X, table["duration_s"].to_numpy(float), X @ est.time_coef_, folds, seed)
    base, skipped = baselines(table, model, gpu, folds, seed)
    oracle = Oracle(
        name=name or f"{model_name.split('/')[-1].lower()}_{backend}",
        model=model_name,
        gpu=gpu_name,
        backend=backend,
        energy_coef_j=est.energy_coef_,
        time_coef_s=est.time_coef_,
        idle_power_w=_idle_power(table, gpu, idle_power_w),
        power_limit_w=_power_limit(table, gpu),
        calibrated=CalibratedRange(
            n_in=(float(table["n_in"].min()), float(table["n_in"].max())),
            n_out=(float(table["n_out"].min()), float(table["n_out"].max())),
            batch=(1.0, float(table["batch_size"].max())),
        ),
        memory=None
        if model is None or gpu is None
        else MemorySpec(model.weight_bytes, model.kv_bytes_per_token, gpu.memory_bytes),
    )
    report = FitReport(
        rows=len(table),
        energy=energy,
        time=time,
        baselines=base,
        skipped=skipped,
        theta_b1=[float(t) for t in oracle.theta(1)],
        n_out_star={n: float(oracle.optimal_output(n)) for n in n_in_report},
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

"""Non-negative least squares with relative-error weighting, scikit-learn style.

Energies span orders of magnitude across (n_in, n_out, batch); plain least squares would fit the
large runs and leave large percentage errors on small ones, so each row is divided by its target.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, lsq_linear, minimize, nnls

MAX_ITER = 1000  # iterations each solver of `relative_bounded_lsq` may take
TIME_LIMIT_S = 20.0  # s the trust-constr fallback of `relative_bounded_lsq` may take


class NotFittedError(RuntimeError):
    """A model used before `fit`."""


class FitNotConvergedError(RuntimeError):
    """A constrained fit stopped by its iteration or time bound, or outside its limits."""


def relative_nnls(X: ArrayLike, y: ArrayLike) -> np.ndarray:
    """Coefficients c ≥ 0 minimising Σ ((X·c − y) / y)². Columns are rescaled for conditioning."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be (rows, features) matching y; got {X.shape} and {y.shape}")
    if np.any(~np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("targets must be finite and positive for a relative-error fit")
    A = X / y[:, None]
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    c, _ = nnls(A / scale, np.ones_like(y), maxiter=50 * X.shape[1])
    return c / scale


def relative_bounded_lsq(
    X: ArrayLike,
    y: ArrayLike,
    lower: ArrayLike,
    constraints: tuple[np.ndarray, np.ndarray] | None = None,
    max_iter: int = MAX_ITER,
    time_limit_s: float = TIME_LIMIT_S,
    weights: ArrayLike | None = None,
    relative_to: ArrayLike | None = None,
) -> np.ndarray:
    """Coefficients c ≥ lower minimising Σ (w·(X·c − y) / r)², optionally with G·c ≤ h
    (`weights` w: 1 for every row unless given; `relative_to` r: y unless given, e.g. a measured
    total of which y is what is left once held terms are taken out).

    For small physical fits (a handful of constants) where bounds and linear inequalities encode
    what hardware can do. Solved with SLSQP (trust-constr if that fails) from the bounded
    least-squares start; each
    inequality is normalised so that limits of very different magnitudes weigh alike. Each solver
    stops after `max_iter` iterations, trust-constr also after `time_limit_s` s (its iterations can
    take 0.1 s each); FitNotConvergedError says so when a bound stopped it.
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    r = y if relative_to is None else np.asarray(relative_to, dtype=float)
    A = X / r[:, None] * w[:, None]
    b = y / r * w
    scale = np.linalg.norm(A, axis=0)
    scale[scale == 0] = 1.0
    As = A / scale
    lo = np.asarray(lower, dtype=float) * scale
    start = lsq_linear(As, b, bounds=(lo, np.inf)).x
    if constraints is None:
        return start / scale
    G, h = (np.asarray(a, dtype=float) for a in constraints)
    Gs = G / scale
    norm = np.maximum(np.maximum(np.linalg.norm(Gs, axis=1), np.abs(h)), np.finfo(float).tiny)
    Gs, h = Gs / norm[:, None], h / norm
    if np.all(Gs @ start - h <= 1e-12):
        return start / scale
    H, g = As.T @ As, As.T @ b  # Σ (As·c − b)² = cᵀHc − 2gᵀc + Σ b²
    res = minimize(
        lambda c: float(c @ H @ c - 2.0 * g @ c),
        start,
        jac=lambda c: 2.0 * (H @ c - g),
        bounds=Bounds(lo, np.inf),
        constraints=[{"type": "ineq", "fun": lambda c: h - Gs @ c, "jac": lambda c: -Gs}],
        method="SLSQP",
        options={"maxiter": max_iter, "ftol": 1e-12},
    )
    if not res.success or np.any(Gs @ res.x - h > 1e-6):
        res = minimize(
            lambda c: float(c @ H @ c - 2.0 * g @ c),
            np.maximum(lo, 0.0),
            jac=lambda c: 2.0 * (H @ c - g),
            hess=lambda c: 2.0 * H,
            bounds=Bounds(lo, np.inf),
            constraints=[LinearConstraint(Gs, -np.inf, h)],
            method="trust-constr",
            options={"maxiter": max_iter, "gtol": 1e-12, "xtol": 1e-14},
            callback=_deadline(time_limit_s),
        )
        if res.status in (0, 3):  # 0: max_iter reached, 3: the deadline callback stopped it
            bound = f"{max_iter} iterations" if res.status == 0 else f"{time_limit_s:g} s ({res.nit} iterations)"
            raise FitNotConvergedError(
                f"the constrained fit stopped at its bound of {bound} without converging: "
                "check the table's units and outliers."
            )
    c = np.maximum(res.x, lo)
    if np.any(Gs @ c - h > 1e-6):
        raise FitNotConvergedError(f"the constrained fit failed to satisfy its limits: {res.message}")
    return c / scale


def _deadline(time_limit_s: float) -> Callable[[OptimizeResult], None]:
    """A scipy callback that stops the solver once `time_limit_s` s have passed since this call."""
    end = time.monotonic() + time_limit_s

    def stop(intermediate_result: OptimizeResult) -> None:  # scipy passes the state by this name
        if time.monotonic() > end:
            raise StopIteration

    return stop


def mape_pct(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute percentage error (%)."""
    t = np.asarray(y_true, dtype=float)
    p = np.asarray(y_pred, dtype=float)
    return float(np.mean(np.abs(p - t) / np.abs(t)) * 100.0)


class RelativeNNLS:
    """Linear model y ≈ X·coef_ with coef_ ≥ 0, fitted on relative error."""

    def __init__(self) -> None:
        self.coef_: np.ndarray | None = None

    def fit(self, X: ArrayLike, y: ArrayLike) -> RelativeNNLS:
        """Fit on features X (rows, k) and positive targets y; returns self."""
        self.coef_ = relative_nnls(X, y)
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predictions X·coef_."""
        if self.coef_ is None:
            raise NotFittedError("RelativeNNLS is not fitted yet: call fit(X, y) first")
        return np.asarray(X, dtype=float) @ self.coef_


class ConstrainedRelativeLSQ(RelativeNNLS):
    """RelativeNNLS under linear limits G·coef_ ≤ h (and coef_ ≥ 0)."""

    def __init__(self, G: ArrayLike, h: ArrayLike) -> None:
        super().__init__()
        self.G, self.h = np.asarray(G, dtype=float), np.asarray(h, dtype=float)

    def fit(self, X: ArrayLike, y: ArrayLike) -> ConstrainedRelativeLSQ:
        """Fit on features X (rows, k) and positive targets y within the limits; returns self."""
        X = np.asarray(X, dtype=float)
        self.coef_ = relative_bounded_lsq(X, y, np.zeros(X.shape[1]), constraints=(self.G, self.h))
        return self


def kfold_indices(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """k disjoint test-index arrays covering range(n), shuffled under `seed`."""
    if n < 2:
        raise ValueError(f"cross-validation needs at least 2 rows, got {n}")
    k = min(k, n)
    order = np.random.default_rng(seed).permutation(n)
    return np.array_split(order, k)


def cross_val_mape_pct(
    make: Callable[[], RelativeNNLS], X: ArrayLike, y: ArrayLike, k: int = 5, seed: int = 0
) -> float:
    """k-fold cross-validated MAPE (%) of a fresh model from `make` per fold."""
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    pred = np.empty_like(y)
    for test in kfold_indices(len(y), k, seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        pred[test] = make().fit(X[train], y[train]).predict(X[test])
    return mape_pct(y, pred)

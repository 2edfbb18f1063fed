"""Seeded synthetic traces: Poisson or Gamma arrivals (or a closed loop's clients), fixed or fitted
log-normal lengths."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from traces.config import TraceConfig


@dataclass(frozen=True)
class LengthFit:
    """Bivariate log-normal fit of (n_in, n_out) in tokens.

    `mu_log` and `cov_log` are the mean and covariance of (ln n_in, ln n_out); draws are rounded
    and clipped to [1, max seen in the fitted trace].
    """

    mu_log: tuple[float, float]
    cov_log: tuple[tuple[float, float], tuple[float, float]]
    max_in: int
    max_out: int

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> LengthFit:
        """Fit to a trace's `n_in`, `n_out` columns (all must be >= 1)."""
        logs = np.log(frame[["n_in", "n_out"]].to_numpy(dtype=np.float64))
        mu = logs.mean(axis=0)
        cov = np.cov(logs, rowvar=False)
        return cls(
            (float(mu[0]), float(mu[1])),
            ((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
            int(frame["n_in"].max()),
            int(frame["n_out"].max()),
        )

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw `n` (n_in, n_out) pairs as int32 arrays."""
        logs = rng.multivariate_normal(self.mu_log, self.cov_log, size=n)
        tokens = np.rint(np.exp(logs))
        n_in = np.clip(tokens[:, 0], 1, self.max_in).astype(np.int32)
        n_out = np.clip(tokens[:, 1], 1, self.max_out).astype(np.int32)
        return n_in, n_out


def arrivals(n: int, rate_per_s: float, arrival: str, cv: float, rng: np.random.Generator) -> np.ndarray:
    """`n` arrival times (s) starting at 0.0 with mean rate `rate_per_s`.

    Poisson: exponential inter-arrivals. Gamma: shape 1/cv**2, so the inter-arrival
    coefficient of variation is `cv` (cv > 1 is burstier than Poisson).
    """
    if arrival == "poisson":
        gaps = rng.exponential(1.0 / rate_per_s, size=n - 1)
    elif arrival == "gamma":
        shape = 1.0 / cv**2
        gaps = rng.gamma(shape, 1.0 / (rate_per_s * shape), size=n - 1)
    else:
        raise ValueError(f"trace config: arrival={arrival!r} is invalid, expected poisson|gamma")
    return np.concatenate(([0.0], np.cumsum(gaps)))


def generate(cfg: TraceConfig, rng: np.random.Generator, fit: LengthFit | None = None) -> pd.DataFrame:
    """A synthetic trace for `cfg`; `fit` is required unless both n_in and n_out are fixed."""
    t = arrivals(cfg.num_requests, cfg.rate_per_s, cfg.arrival, cfg.cv, rng)
    n_in, n_out = lengths(cfg, rng, fit)
    return pd.DataFrame({"arrival_s": t, "n_in": n_in, "n_out": n_out})


def closed_loop(cfg: TraceConfig, rng: np.random.Generator, fit: LengthFit | None = None) -> pd.DataFrame:
    """The requests of a closed loop, in the order the clients send them: lengths drawn as
    `generate` draws them, then `think_s`, the time (s) its client waits after it finishes before
    sending its next request (`cfg.think_s`, or exponential draws of that mean). `arrival_s` is
    0.0 here: the simulation sets each request's when its client sends it (`sim.clients`)."""
    n = cfg.num_requests
    n_in, n_out = lengths(cfg, rng, fit)
    think = rng.exponential(cfg.think_s, size=n) if cfg.think == "exponential" else np.full(n, cfg.think_s)
    return pd.DataFrame({"arrival_s": np.zeros(n), "n_in": n_in, "n_out": n_out, "think_s": think})


def lengths(cfg: TraceConfig, rng: np.random.Generator, fit: LengthFit | None) -> tuple[np.ndarray, np.ndarray]:
    """`cfg.num_requests` (n_in, n_out) pairs (int32 tokens): `cfg.n_in`/`cfg.n_out` where fixed,
    else drawn from `fit` (required unless both are fixed)."""
    n = cfg.num_requests
    if cfg.n_in is not None and cfg.n_out is not None:
        return np.full(n, cfg.n_in, np.int32), np.full(n, cfg.n_out, np.int32)
    if fit is None:
        raise ValueError("trace config: lengths_from is required unless n_in and n_out are set")
    n_in, n_out = fit.sample(n, rng)
    if cfg.n_in is not None:
        n_in = np.full(n, cfg.n_in, np.int32)
    if cfg.n_out is not None:
        n_out = np.full(n, cfg.n_out, np.int32)
    return n_in, n_out

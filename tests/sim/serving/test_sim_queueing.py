"""One request at a time, Poisson arrivals, one request shape: the M/D/1 queue."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from sim.config import ServerConfig
from sim.serving.run import simulate


def test_mean_wait_matches_pollaczek_khinchine(llama):
    llama = dataclasses.replace(llama, power_limit_w=None)  # service time straight from the polynomial
    n_in, n_out, rho, n = 512, 64, 0.7, 200_000
    service_s = float(llama.time(n_in, n_out, 1, check_range=False))
    rate = rho / service_s
    rng = np.random.default_rng(7)
    arrival = np.concatenate([[0.0], np.cumsum(rng.exponential(1 / rate, n - 1))])
    requests = pd.DataFrame({"arrival_s": arrival, "n_in": n_in, "n_out": n_out})
    r = simulate(requests, llama, ServerConfig(max_batch_size=1)).requests
    np.testing.assert_allclose(r["e2e_s"] - r["wait_s"], service_s, rtol=1e-9)  # deterministic service
    expected = rate * service_s**2 / (2 * (1 - rho))  # P-K: λ·E[S²] / (2(1 − ρ))
    measured = r["wait_s"].to_numpy()[n // 10 :].mean()  # drop the warm-up
    assert abs(measured - expected) / expected < 0.04, (measured, expected)

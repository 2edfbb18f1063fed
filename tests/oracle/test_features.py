"""The step-level model and the SweetSpot request-level polynomial agree."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle import features as F
from oracle.model import CalibratedRange, Oracle

# an oracle needs time for every step: const > 0, or a decode and a prefill coefficient
coef = st.lists(st.floats(0, 10, allow_nan=False), min_size=6, max_size=6).filter(
    lambda c: c[0] > 0 or (any(c[1:3]) and any(c[3:]))
)


def _oracle(c):
    wide = CalibratedRange((1, 1e6), (1, 1e6), (1, 1e6))
    return Oracle("t", "m", "g", "b", c, c, idle_power_w=0.0, calibrated=wide)


def _lockstep_steps(n_in: int, n_out: int, b: int) -> np.ndarray:
    """Every step of b identical requests in lockstep, written out one by one."""
    steps = [F.step_features(prefill_seqs=b, prefill_tokens=b * n_in, prefill_attn=b * F.attn_pairs(n_in))]
    steps += [F.step_features(decode_seqs=b, decode_ctx=b * (n_in + k)) for k in range(1, n_out)]
    return np.array(steps)


@settings(max_examples=60, deadline=None)
@given(coef, st.integers(1, 600), st.integers(1, 300), st.integers(1, 64))
def test_step_sum_equals_polynomial(c, n_in, n_out, b):
    o = _oracle(c)
    steps = _lockstep_steps(n_in, n_out, b)
    assert o.energy(n_in, n_out, b) == pytest.approx(o.step_energy(steps).sum() / b, rel=1e-9, abs=1e-9)
    # latency: every request waits for all of the batch's steps
    assert o.time(n_in, n_out, b) == pytest.approx(o.step_time(steps).sum(), rel=1e-9, abs=1e-9)


def test_theta_golden_values():
    # c = [c0..c5] = [8, 1, 2, 3, 4, 6] at B = 4, derived by hand from the module docstring.
    theta = F.theta_from_coef([8, 1, 2, 3, 4, 6], batch=4)
    assert theta.tolist() == [3.0, 2.0, 5.0, 1.0, 2.0, 2.0]


@given(st.lists(st.integers(1, 500), min_size=1, max_size=8))
def test_chunked_prefill_costs_the_same_pairs(chunks):
    total, past = 0.0, 0
    for c in chunks:
        total += float(F.attn_pairs(c, past))
        past += c
    assert total == pytest.approx(float(F.attn_pairs(past)))


def test_run_features_split_full_and_remainder_batches():
    x = F.run_features(100, 10, batch_size=8, num_requests=20)
    expected = 2 * F.lockstep_features(100, 10, 8) + F.lockstep_features(100, 10, 4)
    np.testing.assert_allclose(x, expected)
    # a cap above the request count is one batch of all requests
    np.testing.assert_allclose(F.run_features(100, 10, 64, 5), F.lockstep_features(100, 10, 5))


@settings(max_examples=40, deadline=None)
@given(st.integers(64, 4096), st.sampled_from([1, 8, 64]))
def test_optimal_output_minimises_energy_per_token(n_in, b):
    o = Oracle.load("llama-3.1-8b_h100")
    star = float(o.optimal_output(n_in, b))
    grid = np.arange(1, 20000)
    per_token = o.energy(n_in, grid, b, check_range=False) / grid
    assert abs(grid[per_token.argmin()] - star) <= 1.0


def test_optimal_output_is_infinite_without_length_growth():
    assert np.isinf(F.optimal_output([1, 1, 1, 0, 1, 1], 100))

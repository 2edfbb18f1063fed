"""Golden values and series identities of the step math (the decode-span closed forms are
`sim.kernel.costs`'; tests/sim/kernel/test_costs.py holds them to step-by-step sums under a cap)."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from oracle import features as F
from oracle.features import StepCoef
from sim.engine.costs import StepCosts, sequence_energy_j
from sim.kernel import costs, linear
from tests.sim.kernel.test_lists import row

COEF = StepCoef(0.5, 0.01, 0.001, 0.02, 0.003, 1e-5)


def span(coef: StepCoef, batch: int, ctx: int, steps: int) -> float:
    return float(linear.span(row(coef)[0], batch, ctx, steps))


def steps_to_reach(coef: StepCoef, batch: int, ctx: int, dt_s: float) -> int:
    """Without a power cap (0 W)."""
    return int(costs.steps_to_reach(row(coef), row(np.zeros(6)), 0.0, 0.0, batch, ctx, dt_s))


def test_span_golden():
    # k=3 steps, B=2, S=10: (0.5+0.02+0.01)*3 + 0.001*2*3*2/2 = 1.59 + 0.006
    assert span(COEF, 2, 10, 3) == np.float64(3 * (0.5 + 0.02 + 0.010)) + 0.006


@given(st.integers(1, 64), st.integers(1, 10_000), st.integers(1, 300))
def test_span_is_sum_of_steps(batch, ctx, steps):
    one_by_one = sum(span(COEF, batch, ctx + j * batch, 1) for j in range(steps))
    assert np.isclose(span(COEF, batch, ctx, steps), one_by_one, rtol=1e-12)


@given(st.integers(1, 64), st.integers(1, 10_000), st.floats(0.0, 50.0))
def test_steps_to_reach_is_the_first_boundary(batch, ctx, dt):
    k = steps_to_reach(COEF, batch, ctx, dt)
    assert k >= 1 and span(COEF, batch, ctx, k) >= dt
    assert k == 1 or span(COEF, batch, ctx, k - 1) < dt


def test_a_mixed_step_matches_its_feature_vector():
    prefill = [(0, 100, 0), (1, 50, 30)]
    x = F.step_features(
        decode_seqs=3,
        decode_ctx=900,
        prefill_seqs=2,
        prefill_tokens=150,
        prefill_attn=float(F.attn_pairs(100) + F.attn_pairs(50, 30)),
    )
    dt, de, extra, mhz = StepCosts(COEF, COEF, 0.0).mixed(3, 900, prefill)  # no cap: the coefficients' values
    assert np.isclose(dt, x @ np.array(COEF), rtol=1e-14) and dt == de and extra == 0.0 and mhz == 0.0


def test_sequence_energy_sums_to_lockstep_polynomial():
    """B requests in lockstep: own costs + const/B per step = the oracle's request polynomial."""
    n_in, n_out, b = np.array([1, 64, 700]), np.array([1, 2, 300]), 4
    own = sequence_energy_j(COEF, n_in, n_out)
    poly = F.polynomial(F.theta_from_coef(np.array(COEF), b), n_in, n_out)
    assert np.allclose(own + COEF[0] * n_out / b, poly, rtol=1e-12)


def test_chunking_changes_only_the_per_chunk_constant():
    one, three = sequence_energy_j(COEF, 300, 5, 1), sequence_energy_j(COEF, 300, 5, 3)
    assert np.isclose(three - one, 2 * COEF[3])

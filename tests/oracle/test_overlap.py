"""oracle.overlap: a run's prompt tokens below a knee, exact for single steps and read between the
knees for windows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oracle.overlap import KNEES, PromptSteps, below_knees


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20_000), st.integers(1, 50), st.floats(0.0, 1.0)), min_size=1, max_size=30),
    st.floats(0.0, 70_000.0),
)
def test_a_window_read_between_the_knees_is_its_steps_summed(spans, knee):
    """Σ weight · steps · min(tokens, knee) over the spans, from the grid: exact at a knee, and
    between two knees within the error of reading a concave curve linearly."""
    tokens, steps, weights = (np.array(c, dtype=float) for c in zip(*spans, strict=True))
    grid = PromptSteps.of_grid(below_knees(tokens, steps, weights)[None, :])
    exact = float(weights * steps @ np.minimum(tokens, knee))
    got = float(grid.below(np.array([knee]))[0])
    assert got <= exact + 1e-6 * max(exact, 1.0)  # a chord under a concave curve
    i = np.searchsorted(KNEES, knee)
    if i < KNEES.size and KNEES[i] == knee:
        assert got == pytest.approx(exact, rel=1e-12, abs=1e-12)
    lo = float(weights * steps @ np.minimum(tokens, KNEES[max(i - 1, 0)]))
    assert got >= min(lo, exact) - 1e-9


def test_single_steps_are_exact_and_rows_keep_their_kind():
    rows = PromptSteps.concat(PromptSteps.of_steps(np.array([100.0, 0.0])), PromptSteps.of_grid(np.tile(KNEES, (1, 1))))
    got = rows.below(np.array([30.0, 30.0, 3.0]))
    assert got.tolist() == [30.0, 0.0, 3.0]  # min(100, 30), min(0, 30), a grid S(k) = k read at 3
    assert rows.take(np.array([2])).below(np.array([0.5])).tolist() == [0.5]  # below the first knee: linear from 0
    with pytest.raises(ValueError, match="columns a row"):
        PromptSteps.of_grid(np.ones((1, 3)))

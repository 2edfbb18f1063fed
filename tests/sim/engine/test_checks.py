"""Requests given to the Python API are checked as the trace loader checks a file's."""

from __future__ import annotations

import numpy as np
import pytest

from sim.config import ServerConfig
from sim.serving.fleet import Fleet
from sim.serving.run import simulate
from sim.serving.windows import simulate_windows
from tests.sim.conftest import toy_oracle, trace

GOOD = [(0.0, 10, 5), (1.0, 10, 5), (2.0, 10, 5)]


def _with(row: int, column: int, value) -> list[tuple]:
    rows = [list(r) for r in GOOD]
    rows[row][column] = value
    return [tuple(r) for r in rows]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (_with(1, 0, np.nan), "request 1: arrival_s nan is not a finite number of seconds"),
        (_with(2, 0, np.inf), "request 2: arrival_s inf is not a finite number of seconds"),
        (_with(0, 0, -1.0), "request 0: arrival_s -1.0 is negative"),
        (_with(2, 0, 0.5), "request 2: arrival_s 0.5 is earlier than request 1's 1.0; sort the requests"),
        (_with(1, 1, 10.5), "request 1: n_in 10.5 is not an integer token count"),
        (_with(1, 2, np.nan), "request 1: n_out nan is not an integer token count"),
        (_with(0, 1, 0), "request 0: n_in 0 is an empty prompt"),
        (_with(1, 2, 0), "request 1: n_out 0 is a failed request: nothing to serve"),
        (_with(2, 2, -3), "request 2: n_out -3 is a negative token count"),
        (_with(1, 2, 3e9), "request 1: n_out 3000000000.0 is too large for a token count"),
    ],
)
def test_simulate_names_the_bad_request(rows, message):
    with pytest.raises(ValueError, match="^requests: ") as e:
        simulate(trace(rows), toy_oracle(), ServerConfig())
    assert message in str(e.value) and "\n" not in str(e.value)


def test_windows_check_the_requests_before_planning():
    fleet = Fleet.single(toy_oracle(), ServerConfig())
    with pytest.raises(ValueError, match="request 1: arrival_s nan is not a finite"):
        simulate_windows(trace(_with(1, 0, np.nan)), fleet, windows=2, warmup_s=1.0)


def test_whole_float_token_counts_are_served():
    """5.0 tokens (a float column, as pandas makes of a column with a NaN dropped) is a count."""
    result = simulate(trace([(0.0, 10.0, 4), (1.0, 10, 5.0)]), toy_oracle(), ServerConfig())
    assert result.requests["n_out"].tolist() == [4, 5]
    assert result.requests["completed"].all()

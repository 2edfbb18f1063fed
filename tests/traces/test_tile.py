"""traces.tile: a trace repeated end to end, each copy one period later."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from traces.tile import tile


def test_each_copy_is_the_trace_one_period_later():
    hour = pd.DataFrame({"arrival_s": [0.0, 1.5, 3000.0], "n_in": [5, 6, 7], "n_out": [1, 2, 3]})
    day = tile(hour, 3, period_s=3600.0)
    assert day["arrival_s"].tolist() == [0.0, 1.5, 3000.0, 3600.0, 3601.5, 6600.0, 7200.0, 7201.5, 10200.0]
    assert day["n_in"].tolist() == [5, 6, 7] * 3 and np.all(np.diff(day["arrival_s"]) >= 0)


def test_a_trace_longer_than_the_period_is_refused():
    with pytest.raises(ValueError, match="spans 4000 s, more than the 3600 s period"):
        tile(pd.DataFrame({"arrival_s": [0.0, 4000.0], "n_in": [1, 1], "n_out": [1, 1]}), 2)

"""tracking.report_plots: on a tuning sweep's table (many runs at one point), only the Pareto
front is numbered, and the latency legend sits beside the bars, not on them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from tracking.report import fronts
from tracking.report_plots import LATENCIES, _latency, pareto_panel


def _sweep(runs: int = 20) -> pd.DataFrame:
    """A tuning sweep's table: half its runs cut nothing (all at the origin), the rest on a line."""
    cut = np.r_[np.zeros(runs // 2), np.linspace(0.2, 2.0, runs - runs // 2)]
    table = pd.DataFrame({"label": [f"run {i}" for i in range(runs)], "group": "g", "policy": "adaptive_gen",
                          "quality_cost_pct": cut, "energy_savings_pct": 0.7 * cut})  # fmt: skip
    for lat in LATENCIES:
        table[f"{lat}.p50"], table[f"{lat}.p99"] = 0.1, 1.0
    return table


def test_only_the_front_is_numbered_and_the_origin_gets_one_label() -> None:
    table = _sweep()
    front = fronts(table)["g"]
    ax, key = Figure().subplots(1, 2)
    pareto_panel(ax, key, table, front)
    numbers = [(t.get_text(), t.xy) for t in ax.texts]
    assert [n for n, _ in numbers] == [str(i + 1) for i in range(len(front))] == [str(i + 1) for i in range(11)]
    assert sum(1 for _, xy in numbers if xy == (0.0, 0.0)) == 1
    assert "(9 dominated runs: comparison.md)" in key.texts[0].get_text()


def test_the_latency_legend_is_beside_the_bars() -> None:
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    _latency(ax, _sweep(6))
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes.x1

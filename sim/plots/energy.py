"""The energy breakdown of a run whose prefills found prompt tokens in the prefix cache
(energy_breakdown.png, drawn only then): one stacked bar per run (the policy's, then the
baseline's) of the energy spent: the requests' own prefill terms (per chunk, prompt token and
attention pair: what the cache shrinks), the rest of the steps' energy (decode terms and the
steps' shared costs, which a step that prefills some sequences while it decodes others shares
between them), idle (over the paired horizon, as summary.json has them); and on top, hatched, the
prefill energy the cache spared: energy not spent. Drawn from summary.json alone, so
`python -m sim.plots` draws it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sim.plots.figure import figure, save
from sim.results.summary import SAME_RUN

ENERGY_PLOT = "energy_breakdown.png"
SEGMENTS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("prefill_energy_j", "prefill (the requests' own terms)", {"color": "C1"}),
    ("decode_and_shared_j", "decode and the steps' shared costs", {"color": "C0"}),
    ("idle_energy_j", "idle", {"color": "0.75"}),
    (
        "cache_saved_j",
        "spared by the prefix cache (not spent)",
        {"facecolor": "none", "edgecolor": "C2", "hatch": "///"},
    ),
)
"""(summary key, legend label, bar style) of each segment, bottom up."""


def cache_hits(summary: Mapping[str, Any]) -> bool:
    """Whether a run of a summary.json (the policy's or the baseline's) found prompt tokens in the
    prefix cache (False for a summary written before the cache was counted)."""
    return any((run or {}).get("cached_tokens", 0) > 0 for run in (summary, summary.get("baseline")))


def plot_energy_breakdown(summary: Mapping[str, Any], path: Path) -> Path:
    """One stacked bar (kJ) per run of a summary.json (one for a baseline that is the same run):
    the steps' energy, idle energy and, hatched on top, the prefill the prefix cache spared; above
    each, its share of prompt tokens found cached."""
    other = summary.get("baseline") and summary.get("baseline_source") != SAME_RUN
    runs = [summary, *([summary["baseline"]] if other else [])]
    labels = [str(summary["policy"]), *(f"{r['policy']} (baseline)" for r in runs[1:])]
    fig = figure(4.4 + 1.8 * len(runs), 4.0, left_in=0.9, right_in=3.1)
    ax = fig.subplots()
    x, top = np.arange(len(runs)), np.zeros(len(runs))
    for key, label, style in SEGMENTS:
        kj = np.array([_segment(r, key) / 1e3 for r in runs])
        ax.bar(x, kj, 0.6, bottom=top, label=label, **style)
        top += kj
    for i, r in enumerate(runs):
        share, spared = 100 * float(r.get("prefix_hit_rate") or 0.0), float(r["cache_saved_j"]) / 1e3
        ax.annotate(f"{share:.1f}% of prompt tokens cached,\n{spared:.3g} kJ of prefill spared", (x[i], top[i]),
                    xytext=(0, 3), textcoords="offset points", ha="center", fontsize=8)  # fmt: skip
    ax.set_xticks(x, labels)
    ax.set_xlim(-0.7, len(runs) - 0.3)
    ax.set_ylim(0, 1.15 * top.max())
    ax.set(ylabel="energy (kJ)", title="Energy, and the prefill the prefix cache spared")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.03, 1.0), frameon=False)
    return save(fig, path)


def _segment(run: Mapping[str, Any], key: str) -> float:
    """A segment's energy (J) in one run's summary: the steps' energy less their prefill terms for
    `decode_and_shared_j` (all of it, with no prefill split, in a summary written before it was)."""
    if key == "decode_and_shared_j":
        return float(run["active_energy_j"]) - float(run.get("prefill_energy_j", 0.0))
    return float(run.get(key, 0.0))

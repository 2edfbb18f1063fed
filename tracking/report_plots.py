"""The report's plots: one Pareto panel per group (the front's points numbered, their labels in a
key beside it so they never overlap), savings, latency and efficiency bars per run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

LATENCIES = ("ttft_s", "tpot_s", "e2e_s")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_plots(table: pd.DataFrame, fronts: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    """pareto.png, savings.png, latency.png and tokens_per_j.png."""
    plt = _pyplot()
    paths = [_pareto(plt, table, fronts, out / "pareto.png")]
    for name, draw in (("savings", _savings), ("latency", _latency), ("tokens_per_j", _tokens_per_j)):
        fig, ax = plt.subplots(figsize=(max(7, 0.5 * len(table)), 4.5))
        draw(ax, table)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)
        plt.close(fig)
        paths.append(out / f"{name}.png")
    return paths


def _pareto(plt, table: pd.DataFrame, fronts: dict[str, pd.DataFrame], path: Path) -> Path:
    groups = sorted(table["group"].unique())
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.2 * len(groups)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})  # fmt: skip
    for (ax, key), group in zip(axes, groups, strict=True):
        rows = table[(table["group"] == group) & table["energy_savings_pct"].notna()]
        pareto_panel(ax, key, rows, fronts.get(group, rows.iloc[:0]))
        ax.set_title(group)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


FRONT_OFFSETS = ((4, 4), (4, -11), (-12, 4), (-12, -11))
"""Offsets (points) of successive front labels, in turn, so that neighbours' numbers do not overlap."""


def pareto_panel(ax, key, rows: pd.DataFrame, front: pd.DataFrame) -> None:
    """Energy saved against quality cost: every run as a point (grey: dominated), the front's
    points numbered along it and named in the `key` panel beside. Only the front is numbered: a
    tuning sweep puts many runs at the same point (no tokens cut, nothing saved)."""
    dominated = rows.drop(index=front.index)
    ax.scatter(dominated["quality_cost_pct"], dominated["energy_savings_pct"], s=14, color="0.6",
               label=f"dominated ({len(dominated)})")  # fmt: skip
    ax.plot(front["quality_cost_pct"], front["energy_savings_pct"], "k--", lw=1, zorder=2)
    ax.scatter(front["quality_cost_pct"], front["energy_savings_pct"], s=26, color="C0", zorder=3,
               label=f"Pareto front ({len(front)})")  # fmt: skip
    for i, (cost, saved) in enumerate(zip(front["quality_cost_pct"], front["energy_savings_pct"], strict=True)):
        ax.annotate(str(i + 1), (cost, saved), textcoords="offset points", xytext=FRONT_OFFSETS[i % 4], fontsize=7)
    ax.set(xlabel="quality cost: tokens removed / tokens asked (%)", ylabel="energy saved (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    key.axis("off")
    lines = [f"{i + 1}. {label}" for i, label in enumerate(front["label"][:40])]
    lines.append(f"({len(dominated)} dominated runs: comparison.md)" if len(dominated) else "")
    key.text(0, 1, "Pareto front\n" + "\n".join(lines), va="top", family="monospace", fontsize=7,
             transform=key.transAxes)  # fmt: skip


def _savings(ax, table: pd.DataFrame) -> None:
    """Each run's saving, and its band (`sim.planning.uncertainty`) as an error bar where the run has one."""
    saved = table["energy_savings_pct"].fillna(0.0).to_numpy()
    low, high = (table.get(f"bands.energy_savings_pct.{end}") for end in ("low", "high"))
    bars = None
    if low is not None and high is not None and low.notna().any():
        bars = np.vstack([np.clip(saved - low.to_numpy(), 0, None), np.clip(high.to_numpy() - saved, 0, None)])
        bars = np.nan_to_num(bars)
    ax.bar(table["label"], saved, yerr=bars, capsize=3, ecolor="0.3")
    title = "Savings per run" + (" (bars: their bands, uncertainty.level)" if bars is not None else "")
    ax.set(ylabel="energy saved vs. no policy (%)", title=title)
    _rotate(ax)


def _latency(ax, table: pd.DataFrame) -> None:
    keys = [f"{lat}.{q}" for lat in LATENCIES for q in ("p50", "p99")]
    pos = np.arange(len(table))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        ax.bar(pos + (k - (len(keys) - 1) / 2) * width, table[key], width, label=key)
    ax.set_xticks(pos, table["label"])
    ax.set(ylabel="latency (s, log scale)", title="Latency percentiles", yscale="log")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never on them
    _rotate(ax)


def _tokens_per_j(ax, table: pd.DataFrame) -> None:
    ax.bar(table["label"], table["output_tokens_per_j"].fillna(0.0))
    ax.set(ylabel="output tokens per joule", title="Energy efficiency per run")
    _rotate(ax)


def _rotate(ax) -> None:
    for tick in ax.get_xticklabels():
        tick.set_rotation(30)
        tick.set_horizontalalignment("right")
        tick.set_fontsize(7)

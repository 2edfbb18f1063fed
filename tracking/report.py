"""Compare the MLflow runs of an experiment: a table (Markdown, CSV) and four plots.

    python -m sim.report --tracking-uri sqlite:///mlflow.db --experiment sweetspot-sim --out report

Reads every run's metrics (the flattened summary.json keys) and `policy.name` / `trace.name`
params, and writes comparison.md, comparison.csv, pareto.png (energy saved against quality cost),
savings.png, latency.png (p50/p99) and tokens_per_j.png into the output folder. One row per run:
a sweep over a policy's settings gives several rows, and several points on the Pareto plot.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tracking.store import DEFAULT_URI

METRICS = (
    "energy_j",
    "energy_savings_pct",
    "output_tokens_per_j",
    "ttft_s.p50",
    "ttft_s.p99",
    "tpot_s.p50",
    "tpot_s.p99",
    "e2e_s.p50",
    "e2e_s.p99",
    "slo_attainment",
    "input_tokens_dropped",
    "output_tokens_cut",
    "requests_shaped",
    "gpus",
    "annual_energy_mwh",
    "facility_power_avg_kw",
    "facility_power_peak_kw",
    "annual_co2e_t",
    "annual_cost",
    "capacity.replicas",
    "capacity.baseline_replicas",
)
"""Summary metrics copied into the table (missing ones are left empty, e.g. capacity without a search)."""
REMOVED_TOKENS = ("input_tokens_dropped", "output_tokens_cut")
SERVED_TOKENS = ("input_tokens", "output_tokens")
"""Tokens served; served + removed = tokens asked, the denominator of the quality cost."""
PARAMS = {"policy": "policy.name", "trace": "trace.name", "router": "fleet.router"}
LATENCIES = ("ttft_s", "tpot_s", "e2e_s")


class ReportError(RuntimeError):
    """No runs to report: the message says which experiment and where it was looked for."""


def load_runs(tracking_uri: str, experiment: str, filter_string: str = "") -> pd.DataFrame:
    """The runs of `experiment` (newest first), as mlflow.search_runs returns them.

    filter_string: an MLflow search filter, e.g. "params.trace.name = 'azure_chat'".
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        known = sorted(e.name for e in mlflow.search_experiments())
        raise ReportError(f"no experiment {experiment!r} at {tracking_uri}; experiments there: {known or 'none'}")
    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string=filter_string, order_by=["attributes.start_time DESC"]
    )
    if runs.empty:
        which = f" matching {filter_string!r}" if filter_string else ""
        raise ReportError(f"experiment {experiment!r} at {tracking_uri} has no runs{which}; run `python -m sim` first")
    return runs


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: policy, trace, the METRICS, and quality_cost_pct (tokens removed / asked, %)."""
    table = pd.DataFrame({"run_id": runs["run_id"], "run_name": _column(runs, "tags.mlflow.runName", "")})
    for name, key in PARAMS.items():
        table[name] = _column(runs, f"params.{key}", "?").fillna("?").astype(str)
    for key in METRICS:
        table[key] = _column(runs, f"metrics.{key}", np.nan).astype(float)
    table["quality_cost_pct"] = quality_cost_pct(runs)
    table.insert(0, "label", _labels(table))
    return table.sort_values(["trace", "policy", "label"], kind="stable").reset_index(drop=True)


def quality_cost_pct(runs: pd.DataFrame) -> pd.Series:
    """Tokens removed (input dropped + output cut) / tokens asked (served + removed) × 100; NaN if unknown."""
    removed = sum(_column(runs, f"metrics.{k}", 0.0).fillna(0.0) for k in REMOVED_TOKENS)
    total = removed + sum(_column(runs, f"metrics.{k}", np.nan) for k in SERVED_TOKENS)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (100.0 * removed / total.where(total > 0)).astype(float)


def to_markdown(table: pd.DataFrame) -> str:
    """A Markdown table of the comparison (numbers to 4 significant digits)."""
    cols = [c for c in table.columns if c not in ("run_id", "run_name")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_report(table: pd.DataFrame, out_dir: str | Path, title: str = "Policy comparison") -> list[Path]:
    """Write comparison.md, comparison.csv and the plots into out_dir; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "comparison.md", out / "comparison.csv"
    note = (
        ""
        if table["quality_cost_pct"].notna().any()
        else (f"\nQuality cost unavailable: the runs lack the metrics {', '.join(SERVED_TOKENS)}.\n")
    )
    md.write_text(f"# {title}\n\n{to_markdown(table)}{note}")
    table.to_csv(csv, index=False)
    return [md, csv, *write_plots(table, out)]


def write_plots(table: pd.DataFrame, out: Path) -> list[Path]:
    """pareto.png, savings.png, latency.png and tokens_per_j.png (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name, draw in (
        ("pareto", _pareto),
        ("savings", _savings),
        ("latency", _latency),
        ("tokens_per_j", _tokens_per_j),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        draw(ax, table)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=120)
        plt.close(fig)
        paths.append(out / f"{name}.png")
    return paths


def pareto_front(cost: np.ndarray, saved: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (no other point saves more at no higher cost), by cost."""
    order = np.lexsort((-saved, cost))
    best, keep = -np.inf, []
    for i in order:
        if saved[i] > best:
            keep.append(i)
            best = saved[i]
    return np.asarray(keep, dtype=int)


def _pareto(ax, table: pd.DataFrame) -> None:
    ok = table["energy_savings_pct"].notna().to_numpy()
    cost = table["quality_cost_pct"].fillna(0.0).to_numpy()[ok]
    saved = table["energy_savings_pct"].to_numpy()[ok]
    labels = table["label"].to_numpy()[ok]
    for policy in table["policy"].unique():
        m = (table["policy"].to_numpy()[ok]) == policy
        ax.scatter(cost[m], saved[m], label=policy)
    front = pareto_front(cost, saved)
    ax.plot(cost[front], saved[front], "k--", lw=1, label="Pareto front")
    for xi, yi, label in zip(cost, saved, labels, strict=True):
        ax.annotate(label, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(
        xlabel="quality cost: tokens removed / tokens asked (%)",
        ylabel="energy saved (%)",
        title="Energy saved against quality cost",
    )
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)


def _savings(ax, table: pd.DataFrame) -> None:
    ax.bar(table["label"], table["energy_savings_pct"].fillna(0.0))
    ax.set(ylabel="energy saved vs. no policy (%)", title="Savings per policy")
    _rotate(ax)


def _latency(ax, table: pd.DataFrame) -> None:
    keys = [f"{lat}.{q}" for lat in LATENCIES for q in ("p50", "p99")]
    pos = np.arange(len(table))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        ax.bar(pos + (k - (len(keys) - 1) / 2) * width, table[key], width, label=key)
    ax.set_xticks(pos, table["label"])
    ax.set(ylabel="latency (s, log scale)", title="Latency percentiles", yscale="log")
    ax.legend(fontsize=7, ncols=3)
    _rotate(ax)


def _tokens_per_j(ax, table: pd.DataFrame) -> None:
    ax.bar(table["label"], table["output_tokens_per_j"].fillna(0.0))
    ax.set(ylabel="output tokens per joule", title="Energy efficiency per policy")
    _rotate(ax)


def _rotate(ax) -> None:
    for tick in ax.get_xticklabels():
        tick.set_rotation(30)
        tick.set_horizontalalignment("right")


def _column(runs: pd.DataFrame, name: str, default: object) -> pd.Series:
    return runs[name] if name in runs.columns else pd.Series(default, index=runs.index)


def _labels(table: pd.DataFrame) -> list[str]:
    """`policy` (with ` / trace` and ` / router` when those vary), then the run name, then the run id,
    until unique."""
    base = table["policy"]
    for key in ("trace", "router"):
        if table[key].nunique() > 1:
            base = base + " / " + table[key]
    named = base + " (" + table["run_name"].where(table["run_name"].astype(bool), table["run_id"].str[:8]) + ")"
    by_id = base + " (" + table["run_id"].str[:8] + ")"
    labels = base.where(~base.duplicated(keep=False), named)
    return labels.where(~labels.duplicated(keep=False), by_id).tolist()


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def main(argv: Sequence[str] | None = None) -> int:
    """Write the comparison of an experiment's runs; exit status 1 with a message when there are none."""
    p = argparse.ArgumentParser(prog="python -m sim.report", description=__doc__.splitlines()[0])
    p.add_argument("--tracking-uri", default=DEFAULT_URI, help="MLflow tracking URI (sqlite, http, file)")
    p.add_argument("--experiment", default="sweetspot-sim", help="MLflow experiment name")
    p.add_argument("--out", default="report", help="output folder")
    p.add_argument("--filter", default="", help="MLflow filter, e.g. \"params.trace.name = 'azure_chat'\"")
    args = p.parse_args(argv)
    try:
        runs = load_runs(args.tracking_uri, args.experiment, args.filter)
    except ReportError as e:
        print(f"sim.report: {e}")
        return 1
    paths = write_report(comparison_table(runs), args.out, title=f"Policy comparison: {args.experiment}")
    print(f"{len(runs)} runs compared; wrote {', '.join(str(x) for x in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

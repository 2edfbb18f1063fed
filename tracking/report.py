"""Compare MLflow runs like with like: a table (Markdown, CSV), the Pareto fronts and plots.

    python -m sim.report --experiment sweetspot-sim --out report
    python -m sim.report --sweep multirun/tune_adaptive_gen/2026-01-01_12-00-00.000000
    python -m sim.report --parent RUN_ID
    python -m sim.report --folders multirun/2026-01-01/12-00-00   # the run folders, without MLflow

Runs are selected by experiment, sweep folder or parent run (sweep parents themselves are left
out), grouped by trace and load (trace, rate scale, request count, fleet size, capacity search):
a front never mixes two groups. Points are labelled by their run names, built from the overrides
that vary in the sweep. Metric names come from the summary type (sim.results.summary): a renamed metric
fails here, and runs that lack a required metric are refused by name instead of reading NaN.
Runs not FINISHED (a logging killed mid-way, or one that failed) are skipped and named in one line.
Runs that differ only in their locked SM clock form clock sweeps (`tracking.clock_sweep`): their
energy-latency curve and its sweet spots, in the report and clocks.png.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from sim.results.summary import unit
from tracking import clock_sweep
from tracking.safe_text import redact
from tracking.store import DEFAULT_URI
from tracking.text_table import cell, text_table, to_markdown

log = logging.getLogger(__name__)

REQUIRED = ("energy_j", "output_tokens_per_j", "quality_cost_pct", "ttft_s.p99", "tpot_s.p99", "slo_attainment")
OPTIONAL = (
    "energy_savings_pct", "ttft_s.p50", "tpot_s.p50", "e2e_s.p50", "e2e_s.p99", "input_tokens_dropped",
    "output_tokens_cut", "requests_shaped", "gpus", "annual_energy_mwh", "facility_power_avg_kw",
    "facility_power_peak_kw", "annual_co2e_t", "annual_cost", "capacity.replicas", "capacity.baseline_replicas",
    "prefix_hit_rate", "cache_saved_j", "bands.energy_j.low", "bands.energy_j.high",
    "bands.energy_savings_pct.low", "bands.energy_savings_pct.high", "energy_per_output_token_j", "mean_clock_mhz",
)  # fmt: skip
METRICS = (*REQUIRED, *OPTIONAL)
UNITS = {key: unit(key) for key in METRICS}  # a metric renamed in sim.results.summary fails at import
PARAMS = {
    "policy": "policy.name",
    "trace": "trace.name",
    "router": "fleet.router",
    "prefix_caching": "server.prefix_caching",
    "clock_mhz": "gpu.clock_mhz",
    "power_limit_w": "gpu.power_limit_w",
    "clock_policy": "gpu.clock_policy",
}
UNSET = {"prefix_caching": "default", "clock_mhz": "max", "power_limit_w": "board", "clock_policy": "static"}
"""What a parameter's column says for a run that did not set it (a null is not logged) where "?" would mislead."""
CONSOLE = (
    ("energy (kJ)", "energy_j", 1e-3), ("saved (%)", "energy_savings_pct", 1.0),
    ("saved, band low (%)", "bands.energy_savings_pct.low", 1.0),
    ("quality cost (%)", "quality_cost_pct", 1.0), ("p99 TTFT (s)", "ttft_s.p99", 1.0),
    ("p99 TPOT (s)", "tpot_s.p99", 1.0), ("SLO attainment", "slo_attainment", 1.0),
)  # fmt: skip
"""(header, metric, scale): the columns of the console's table (`console_table`)."""
GROUP = {"rate_scale": "trace.rate_scale", "max_requests": "trace.max_requests", "replicas": "fleet.replicas",
         "capacity": "capacity.enabled"}  # fmt: skip
"""Parameters that set the load: runs that differ in any of them (or in trace) are never compared."""


class ReportError(RuntimeError):
    """No runs to report, or runs that cannot be compared: the message says which and why."""


def load_runs(
    tracking_uri: str, experiment: str, filter_string: str = "", *, sweep: str | None = None, parent: str | None = None
) -> pd.DataFrame:
    """The runs of `experiment` (newest first), optionally of one sweep folder or parent run.

    filter_string: an MLflow search filter, e.g. "params.trace.name = 'azure_chat'".
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        known = sorted(e.name for e in mlflow.search_experiments())
        raise ReportError(f"no experiment {experiment!r} at {tracking_uri}; experiments there: {known or 'none'}")
    clauses = [filter_string] if filter_string else []
    if sweep:
        clauses.append(f"tags.sweep = '{sweep.rstrip('/')}'")
    if parent:
        clauses.append(f"tags.mlflow.parentRunId = '{parent}'")
    where = " and ".join(clauses)
    runs = mlflow.search_runs(
        experiment_names=[experiment], filter_string=where, order_by=["attributes.start_time DESC"]
    )
    if "tags.kind" in runs.columns:
        runs = runs[runs["tags.kind"] != "sweep"]
    if runs.empty:
        which = f" matching {where!r}" if where else ""
        raise ReportError(f"experiment {experiment!r} at {tracking_uri} has no runs{which}; run `python -m sim` first")
    return finished(runs).reset_index(drop=True)


def load_folders(root: str | Path) -> pd.DataFrame:
    """The runs whose output folders lie under `root` (a sweep's folder, or one run's), read from
    their files as MLflow would have logged them (`tracking.folder.contents`), in the layout of
    `load_runs`: for sweeps and runs with tracking off. Folders of runs that did not complete are
    named in one warning (`finished`)."""
    from tracking.folder import RUN_FILE, RunRecord, contents, run_state
    from tracking.log import applicable_params, numeric_metrics

    root = Path(root)
    folders = sorted(
        {p.parent for p in root.rglob(RUN_FILE)}, key=lambda p: [(not x.isdigit(), x.zfill(9)) for x in p.parts]
    )
    if not folders:
        raise ReportError(f"no run folders (with a {RUN_FILE}) under {root}")
    rows = []
    for folder in folders:
        name = str(folder.relative_to(root)) if folder != root else folder.name
        state = run_state(folder)
        row: dict[str, object] = {"run_id": name, "status": "FINISHED" if state is None else "FAILED"}
        if state is None:
            record = RunRecord.read(folder)
            params, metrics = contents(folder, record)
            row["tags.mlflow.runName"] = record.run_name or ""
            row |= {f"params.{k}": v for k, v in applicable_params(params, record.unused_params).items()}
            row |= {f"metrics.{k}": v for k, v in numeric_metrics(metrics).items()}
        rows.append(row)
    return finished(pd.DataFrame(rows)).reset_index(drop=True)


def finished(runs: pd.DataFrame) -> pd.DataFrame:
    """The FINISHED runs; the others (a logger killed mid-way, a failed logging) are named in one
    warning, or in the ReportError when no run is left."""
    done = runs["status"] == "FINISHED"
    if done.all():
        return runs
    rest = runs[~done]
    labels = zip(rest["run_id"], rest["status"], _column(rest, "tags.mlflow.runName", "").fillna(""), strict=True)
    names = ", ".join(f"{run_id[:8]} ({status}, {name or 'unnamed'!r})" for run_id, status, name in labels)
    line = (f"{len(rest)} unfinished run(s) skipped: {names}; `python -m tracking FOLDER` finishes an interrupted "
            "logging")  # fmt: skip
    if not done.any():
        raise ReportError(f"no finished runs: {line}")
    log.warning("sim.report: %s", line)
    return runs[done]


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: label, group, policy, trace, load settings and the METRICS."""
    missing = [k for k in REQUIRED if f"metrics.{k}" not in runs.columns or runs[f"metrics.{k}"].isna().any()]
    if missing:
        col = f"metrics.{missing[0]}"
        bad = runs["run_id"] if col not in runs.columns else runs.loc[runs[col].isna(), "run_id"]
        raise ReportError(
            f"{len(bad)} run(s) lack the metric {missing[0]!r} ({', '.join(bad.str[:8][:5])}...): logged by an older "
            "version? Select newer runs with --sweep/--parent/--filter, or re-run them"
        )
    table = pd.DataFrame({"run_id": runs["run_id"], "run_name": _column(runs, "tags.mlflow.runName", "")})
    for name, key in {**PARAMS, **GROUP}.items():
        unset = UNSET.get(name, "?")
        table[name] = _column(runs, f"params.{key}", unset).fillna(unset).astype(str).map(_number)
    table["group"] = _groups(table)
    for key in METRICS:
        table[key] = _column(runs, f"metrics.{key}", np.nan).astype(float)
    table.insert(0, "label", _labels(table))
    return table.sort_values(["group", "policy", "label"], kind="stable").reset_index(drop=True)


def pareto_front(cost: np.ndarray, saved: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (no other point saves more at no higher cost), by cost."""
    order = np.lexsort((-saved, cost))
    best, keep = -np.inf, []
    for i in order:
        if saved[i] > best:
            keep.append(i)
            best = saved[i]
    return np.asarray(keep, dtype=int)


def fronts(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The Pareto front (energy saved against quality cost) of each group, by cost."""
    out = {}
    for group, rows in table.groupby("group", sort=True):
        rows = rows[rows["energy_savings_pct"].notna()]
        if len(rows):
            idx = pareto_front(rows["quality_cost_pct"].to_numpy(), rows["energy_savings_pct"].to_numpy())
            out[str(group)] = rows.iloc[idx]
    return out


def console_table(table: pd.DataFrame) -> str:
    """The comparison's main columns (CONSOLE) as aligned plain text: one table per group, under a
    line naming the group."""
    parts = []
    for group, rows in table.groupby("group", sort=True):
        cells = (
            [str(row["label"]), *(cell(row[key] * scale) for _, key, scale in CONSOLE)] for _, row in rows.iterrows()
        )
        parts.append(f"{group}:\n{text_table(['run', *(name for name, _, _ in CONSOLE)], cells)}")
    return "\n\n".join(parts)


def fronts_markdown(table: pd.DataFrame) -> str:
    """Each group's Pareto front: label, energy saved (%), quality cost (%)."""
    parts = []
    for group, front in fronts(table).items():
        parts.append(f"### {group}\n\n{to_markdown(front, ['label', 'energy_savings_pct', 'quality_cost_pct'])}")
    return "\n".join(parts) or "No run has a baseline (compare_baseline=false): no front.\n"


def write_report(table: pd.DataFrame, out_dir: str | Path, title: str = "Policy comparison") -> list[Path]:
    """Write comparison.md (table, fronts and clock sweeps), comparison.csv, pareto.md and the
    plots (clocks.png with any clock sweep); the paths."""
    from tracking.report_plots import write_plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, csv, pareto = out / "comparison.md", out / "comparison.csv", out / "pareto.md"
    front = fronts_markdown(table)
    sweeps = clock_sweep.clock_sweeps(table)
    clocks = f"\n## Clock sweeps (energy against latency)\n\n{clock_sweep.markdown(sweeps)}" if sweeps else ""
    md.write_text(
        f"# {title}\n\n{to_markdown(table)}\n## Pareto fronts (energy saved against quality cost)\n\n{front}{clocks}"
    )
    pareto.write_text(front)
    table.to_csv(csv, index=False)
    plots = write_plots(table, fronts(table), out)
    if sweeps:
        plots.append(clock_sweep.plot(sweeps, out / "clocks.png"))
    return [md, csv, pareto, *plots]


def _column(runs: pd.DataFrame, name: str, default: object) -> pd.Series:
    return runs[name] if name in runs.columns else pd.Series(default, index=runs.index)


def _groups(table: pd.DataFrame) -> pd.Series:
    """'trace, rate ×s, n requests, r GPUs[, capacity search]' for each run."""
    parts = table["trace"] + ", rate ×" + table["rate_scale"]
    parts = parts + np.where(table["max_requests"].isin(["?", "None"]), "", ", " + table["max_requests"] + " requests")
    parts = parts + np.where(table["replicas"].isin(["?", "1"]), "", ", " + table["replicas"] + " replicas")
    return parts + np.where(table["capacity"] == "True", ", capacity search", "")


def _labels(table: pd.DataFrame) -> list[str]:
    """The run name (the policy and the overrides that vary), else the policy; run ids until unique."""
    base = table["run_name"].where(table["run_name"].astype(bool), table["policy"])
    by_id = base + " (" + table["run_id"].str[:8] + ")"
    return base.where(~base.duplicated(keep=False), by_id).tolist()


def _number(text: str) -> str:
    """'1', '1.0' and '1.00' are one load: numbers as %g."""
    try:
        return f"{float(text):g}"
    except ValueError:
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Write the comparison of the selected runs; exit status 1 with a message when there are none."""
    p = argparse.ArgumentParser(prog="python -m sim.report", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--tracking-uri", default=DEFAULT_URI, help="MLflow tracking URI (sqlite, http, file)")
    p.add_argument("--experiment", default="sweetspot-sim", help="MLflow experiment name")
    p.add_argument("--sweep", default=None, help="only the runs of this sweep folder (as Hydra printed it)")
    p.add_argument("--parent", default=None, help="only the runs nested under this parent run id")
    p.add_argument("--folders", default=None, help="read the run folders under this folder instead of MLflow")
    p.add_argument("--filter", default="", help="MLflow filter, e.g. \"params.trace.name = 'azure_chat'\"")
    p.add_argument("--out", default="report", help="output folder")
    args = p.parse_args(argv)
    try:
        if args.folders:
            runs = load_folders(args.folders)
        else:
            runs = load_runs(args.tracking_uri, args.experiment, args.filter, sweep=args.sweep, parent=args.parent)
        table = comparison_table(runs)
    except ReportError as e:
        print(f"sim.report: {redact(str(e))}")
        return 1
    paths = write_report(table, args.out, title=f"Policy comparison: {args.folders or args.experiment}")
    print(fronts_markdown(table))
    for name, sweep in clock_sweep.clock_sweeps(table).items():
        print(f"clock sweep ({name}): {clock_sweep.describe(sweep)}")
    print(f"{len(runs)} runs compared in {table['group'].nunique()} group(s); wrote {', '.join(str(x) for x in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

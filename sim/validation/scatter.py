"""The measurements' own scatter: how far each measured run lies from its sweep's neighbours.

A sweep is one model, task and replica layout measured at increasing batch caps. Each run with a
smaller and a larger cap beside it is predicted from those two by a straight line in log(metric)
against log(cap); the residual r of a run whose neighbours lie at fractions 1 - w and w of the way
has variance σ²·(1 + w² + (1 - w)²) if every run carries independent noise of σ, so
r / sqrt(1 + w² + (1 - w)²) estimates that run's own deviation from a curve smooth in the cap. Its
mean absolute value is about the error a model that knew the true curve would still show on those
runs: the floor any simulator, a function of the cap, meets on the data. The straight line also
misses the curve's bend between neighbours, so on smooth sweeps the figure is a few percent, not 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pandas as pd

from sim.validation.table import METRICS

SWEEP = ("model_id", "task", "gpu_model", "num_gpus", "expert_parallel", "data_parallel", "weight_precision")
"""Columns of a validation table that name a sweep: runs that differ only in `max_num_seqs`."""


def scatter_column(metric: str) -> str:
    """The column of `neighbour_scatter`'s table for `metric` (one of `METRICS`)."""
    return f"{metric}_scatter_pct"


SCATTER_COLUMNS = tuple(scatter_column(m) for m in METRICS)
"""`neighbour_scatter`'s columns, in `METRICS`' order."""


def _sweep_keys(df: pd.DataFrame) -> list[pd.Series]:
    """The columns of `df` among `SWEEP`, to group its runs by sweep."""
    return [df[c] for c in SWEEP if c in df.columns]


def inner_runs(df: pd.DataFrame) -> Iterator[tuple[int, np.ndarray, np.ndarray, float]]:
    """Per run of `df` with a smaller and a larger cap in its sweep (`SWEEP`): its position in `df`,
    the positions of the runs at the cap next below and next above it, and w, how far its cap lies
    between those two in log(cap). Where `df` has a `screen` column, runs the calibration's screen
    leaves out (`oracle.screen`: not GPU-bound, data-parallel) and runs it keeps are neighbours only
    among themselves."""
    keys = _sweep_keys(df)
    if "screen" in df.columns:
        keys.append(df["screen"].fillna("").eq(""))
    caps = df["max_num_seqs"].to_numpy(dtype=float)
    for positions in df.groupby(keys, dropna=False, sort=False).indices.values():
        levels = np.unique(caps[positions])
        for at in range(1, len(levels) - 1):
            x0, x, x1 = np.log(levels[at - 1 : at + 2])
            below, above = positions[caps[positions] == levels[at - 1]], positions[caps[positions] == levels[at + 1]]
            for position in positions[caps[positions] == levels[at]]:
                yield int(position), below, above, float((x - x0) / (x1 - x0))


def neighbour_scatter(df: pd.DataFrame) -> pd.DataFrame:
    """Per run of `df` (a validation table: `SWEEP`, `max_num_seqs` and `m_measured` per metric),
    its deviation (%, signed: above or below the line) from the line through the runs at the caps
    next below and above it in its sweep (`inner_runs`), scaled to one run's noise; NaN at a
    sweep's smallest and largest cap. Runs repeated at one cap count as one neighbour (their
    geometric mean)."""
    out = np.full((len(df), len(METRICS)), np.nan)
    logs = np.log(df[[f"{m}_measured" for m in METRICS]].to_numpy(dtype=float))
    for position, below, above, w in inner_runs(df):
        line = (1.0 - w) * logs[below].mean(axis=0) + w * logs[above].mean(axis=0)
        out[position] = np.expm1((logs[position] - line) / math.sqrt(1.0 + w * w + (1.0 - w) ** 2)) * 100.0
    return pd.DataFrame(out, index=df.index, columns=list(SCATTER_COLUMNS))


def across_phases(df: pd.DataFrame) -> pd.Series:
    """Per run with neighbours on both sides (`inner_runs`; NaN elsewhere): 1.0 where a neighbour
    was sent a different number of requests (column `requests`: another entry of the benchmark's
    sweep, with its prompts resent another number of times, run apart from this one), else 0.0."""
    out = np.full(len(df), np.nan)
    requests = df["requests"].to_numpy()
    for position, below, above, _ in inner_runs(df):
        neighbours = requests[np.concatenate([below, above])]
        out[position] = float(bool((neighbours != requests[position]).any()))
    return pd.Series(out, index=df.index)


def scatter_against_error(df: pd.DataFrame, by: str | list[str] | None = None) -> pd.DataFrame:
    """Mean absolute scatter (%) of the measured runs that have neighbours on both sides, beside the
    simulator's mean absolute error on the same runs, per metric (columns 'm scatter', 'm error'),
    over all of them or per value of column(s) `by`; 'runs' counts them."""
    scatter = neighbour_scatter(df)
    inner = scatter.notna().all(axis=1)
    table = pd.DataFrame(index=df.index[inner])
    for m in METRICS:
        table[f"{m} scatter"] = scatter.loc[inner, scatter_column(m)].abs()
        table[f"{m} error"] = df.loc[inner, f"{m}_err_pct"].abs()
    if by is None:
        means = table.mean().to_frame("all runs").T
        means.insert(0, "runs", int(inner.sum()))
        return means
    return _means(table, [df.loc[inner, c] for c in ([by] if isinstance(by, str) else by)])


def _means(table: pd.DataFrame, keys: list[pd.Series]) -> pd.DataFrame:
    """`table`'s column means per value of `keys`, after a first column 'runs' counting its rows."""
    means = table.groupby(keys).mean()
    means.insert(0, "runs", table.groupby(keys).size())
    return means


def repeat_spread(df: pd.DataFrame) -> pd.DataFrame:
    """Caps of a sweep measured more than once: per such cap, its first run's `config_id`, the cap,
    the requests each run was sent (column `requests` where `df` has it: a run may have been
    repeated in another phase of the benchmark's sweep, its prompts resent), and per metric the
    spread (%, the largest over the smallest less one) of the runs' measurements ('m measured') and
    of their simulations ('m simulated'): how far apart the simulator, which replays each run's own
    requests, puts them. A measured spread far beyond the simulated one is variation between the
    runs that no model of their settings accounts for."""
    columns = ["config_id", "max_num_seqs", "requests"]
    columns += [f"{m} {kind}" for m in METRICS for kind in ("measured", "simulated")]
    keys = [*_sweep_keys(df), df["max_num_seqs"]]
    rows = []
    for _, runs in df.groupby(keys, dropna=False, sort=False):
        if len(runs) < 2:
            continue
        sent = "/".join(str(r) for r in runs["requests"]) if "requests" in runs.columns else ""
        line: list[object] = [runs["config_id"].iloc[0], int(runs["max_num_seqs"].iloc[0]), sent]
        for m in METRICS:
            for kind in ("measured", "simulated"):
                values = runs[f"{m}_{kind}"].to_numpy(dtype=float)
                line.append((values.max() / values.min() - 1.0) * 100.0)
        rows.append(line)
    return pd.DataFrame(rows, columns=columns)


def scatter_by_phase(df: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Mean absolute scatter (%) per metric of the runs with neighbours on both sides, per value of
    column(s) `by` and whether a neighbour belongs to another phase of the sweep (`across_phases`:
    'same phase' or 'across phases'); 'runs' counts them. Needs the column `requests`."""
    scatter = neighbour_scatter(df).abs().set_axis([f"{m} scatter" for m in METRICS], axis=1)
    phase = across_phases(df)
    inner = phase.notna()
    keys = [df.loc[inner, c] for c in ([by] if isinstance(by, str) else by)]
    keys.append(phase[inner].map({0.0: "same phase", 1.0: "across phases"}).rename("phase"))
    return _means(scatter[inner], keys)

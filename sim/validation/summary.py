"""What `python -m sim.validate` prints of a validation table: each row measured against simulated,
then mean absolute errors by group, the measurements' own scatter beside them, and the spread of
caps measured more than once.
"""

from __future__ import annotations

import pandas as pd

from sim.validation.compare import mean_abs_error
from sim.validation.scatter import repeat_spread, scatter_against_error, scatter_by_phase
from sim.validation.table import METRICS


def format_rows(df: pd.DataFrame) -> str:
    """Per row: 'measured → simulated (error %)' for every metric."""
    if df.empty:
        return "no rows replayed"
    show = pd.DataFrame(
        {
            "model": df["model_id"].str.split("/").str[-1],
            "task": df["task"],
            "gpu": [_replica(g, n) for g, n in zip(df["gpu_model"], df["num_gpus"], strict=True)],
            "kind": df["kind"],
            "cap": df["max_num_seqs"],
            **{
                m: [
                    f"{_num(a)} → {_num(b)} ({e:+.1f}%)"
                    for a, b, e in zip(df[f"{m}_measured"], df[f"{m}_simulated"], df[f"{m}_err_pct"], strict=True)
                ]
                for m in METRICS
            },
        }
    )
    units = "batch: sequences, throughput: output tokens/s, energy_per_token: J, power: W (all GPUs), itl_median: ms"
    return f"measured → simulated (error) per row; {units}\n{show.to_string(index=False)}"


def format_errors(df: pd.DataFrame) -> str:
    """Mean absolute error (%) per metric, with the rows behind each figure: all rows; per GPU;
    per GPU × GPUs per replica × dense/MoE/hybrid; per GPU × the oracles' constants; per GPU × the
    calibration's screen; per task; per model."""
    if df.empty:
        return ""
    fmt = {"float_format": lambda v: f"{v:.1f}"}
    groups = [
        ("all rows", None, lambda k: str(k)),
        ("per GPU", "gpu_model", lambda k: str(k)),
        (
            "per GPU × GPUs per replica × dense/MoE/hybrid",
            ["gpu_model", "num_gpus", "kind"],
            lambda k: f"{_replica(k[0], k[1])} {k[2]}",
        ),
        (
            "per GPU × oracle constants (refined on the configuration's runs, or the GPU family's)",
            ["gpu_model", "constants"],
            lambda k: f"{k[0]} {k[1]}",
        ),
        (
            "per GPU × the calibration's screen (fitted: it fits on the row; screened: `oracle.screen` leaves it out)",
            ["gpu_model", "fitted"],
            lambda k: f"{k[0]} {k[1]}",
        ),
        ("per task", "task", lambda k: str(k)),
        ("per model", "model_id", lambda k: str(k).split("/")[-1]),
    ]
    kept = df["screen"].fillna("").eq("") if "screen" in df.columns else pd.Series(True, index=df.index)
    df = df.assign(fitted=kept.map({True: "fitted", False: "screened"}))
    parts = ["", "mean absolute error (%)"]
    for title, by, name in groups:
        table = mean_abs_error(df, by)
        if by is None:
            table.insert(0, "rows", len(df))
        else:
            table.insert(0, "rows", df.groupby(by).size())
            table.index = [name(k) for k in table.index]
        parts.append(f"{title}:\n{table.to_string(**fmt)}")
    own = scatter_against_error(df, ["gpu_model", "fitted"])
    if own.empty:
        return "\n".join(parts)
    own.index = [f"{g} {f}" for g, f in own.index]
    parts.append(
        "the measurements' own scatter (`sim.validation.scatter`: each run against the line through the runs at "
        "the caps beside it in its sweep, fitted and screened runs apart, scaled to one run's noise; about the "
        "error a model smooth in the cap cannot go below) and the simulator's error on the same runs, per GPU × "
        f"the calibration's screen:\n"
        f"{own.to_string(**fmt)}"
    )
    if "requests" in df.columns:
        phases = scatter_by_phase(df, ["gpu_model", "fitted"])
        phases.index = [" ".join(map(str, k)) for k in phases.index]
        parts.append(
            "the same scatter where a run's neighbours were sent the prompts as often as it was (one phase of the "
            "benchmark's sweep) and where one was not (another phase, run apart: its level may differ):\n"
            f"{phases.to_string(**fmt)}"
        )
    twice = repeat_spread(df) if "config_id" in df.columns else pd.DataFrame()
    if not twice.empty:
        twice = twice.set_index("config_id").rename(index=lambda c: str(c).split("/")[-1])
        parts.append(
            "caps of a sweep measured more than once: the spread of the runs' measurements and of their simulations "
            f"(%, the largest over the smallest less one; requests: what each run was sent):\n{twice.to_string(**fmt)}"
        )
    return "\n".join(parts)


def _replica(gpu: object, gpus: object) -> str:
    n = int(gpus)  # type: ignore[call-overload]
    return f"{gpu}" if n == 1 else f"{n}×{gpu}"


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"

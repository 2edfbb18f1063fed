"""Fit an oracle to a measurement table and write it with its plots.

    python -m calibrate.fit measurements=FILE out=ORACLE.json [name=...] [idle_power_w=...]

Runs at a locked SM clock or under a power cap (columns `clock_mhz`, `power_limit_w`, what
`grid=dvfs` measures) are set apart: the step model is fitted on the runs at the GPU's default
settings, then the clock parameters on the others (`calibrate.clock_fit`), kept in the oracle
(`clock`) for the simulator's `gpu.clock_mhz`, `gpu.power_limit_w` and clock controller. Without
such runs the GPU's default clock parameters apply, and the report says so.

Prints coefficients, θ at batch 1, n_out* for a few n_in, in-sample and 5-fold CV MAPE of the
oracle and of the baselines on the same rows, and what keeping the implied step power between idle
power and the power limit cost in MAPE; writes ORACLE.json (with `fit.mape_pct`,
`fit.cv_mape_pct` and `fit.power_constraint`), ORACLE.heatmap.png and ORACLE.energy_per_token.png
next to it. A table of one batch size B is fitted at B with the shared and per-sequence decode
costs merged: the report and the oracle's `fit.batch_scaling` say that its batch scaling is
undetermined, and the plots are drawn at B. A table that cannot determine the model (identical
rows, too few distinct points), or whose runs imply a power no GPU draws (energy in kWh, say), is
an error, and no oracle is written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from calibrate.clock_fit import ClockEstimator
from calibrate.table import MeasurementTableError, read_table
from oracle import features as F
from oracle.clocks import ClockError, clock_spec
from oracle.fit import default_settings, fit_oracle
from oracle.model import Oracle
from oracle.plots import plot_efficiency_heatmap, plot_energy_per_token
from oracle.regress import FitNotConvergedError

log = logging.getLogger(__name__)


@dataclass
class FitConfig:
    """Structured config of `python -m calibrate.fit`."""

    measurements: str = "???"
    out: str = "oracle.json"
    name: str | None = None
    idle_power_w: float | None = None
    folds: int = 5
    seed: int = 0
    plots: bool = True

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError(f"folds must be ≥ 2, got {self.folds}")


def fit_measurements(
    table_path: str | Path,
    out_path: str | Path,
    name: str | None = None,
    idle_power_w: float | None = None,
    folds: int = 5,
    seed: int = 0,
    plots: bool = True,
) -> dict[str, Any]:
    """Fit the table at `table_path`, write the oracle JSON and plots; return the fit report dict."""
    table = read_table(table_path)
    at_default = default_settings(table, str(table["gpu"].iloc[0]))
    if not at_default.any():
        raise ValueError(
            f"{table_path}: every run was measured at a locked SM clock or a power cap; the step model needs runs "
            "at the GPU's default settings (clock_mhz and power_limit_w empty) to fit on"
        )
    oracle, report = fit_oracle(
        table[at_default].reset_index(drop=True), name=name, idle_power_w=idle_power_w, folds=folds, seed=seed
    )
    clock_text = _fit_clock(oracle, table[~at_default].reset_index(drop=True))
    out_path = Path(out_path)
    oracle.provenance.update(
        {
            "measurements": str(table_path),
            "method": "calibrate.fit (relative NNLS over step features; energy with implied step power "
            "within [idle, power limit])",
        }
    )
    for problem in oracle.power_violations():
        log.warning("power check: %s", problem)
    oracle.save(out_path)
    coefs = "\n".join(
        f"  {f:<15} energy {e:.4e} J   time {t:.4e} s"
        for f, e, t in zip(F.FEATURES, oracle.energy_coef_j, oracle.time_coef_s, strict=True)
    )
    print(f"step coefficients (per feature unit):\n{coefs}\n{report.text()}\n{clock_text}")
    if plots:
        stem = out_path.with_suffix("")
        batch = int(oracle.fitted_batch or 1)  # a one-batch oracle is plotted where it was measured
        plot_efficiency_heatmap(oracle, f"{stem}.heatmap.png", batch=batch)
        plot_energy_per_token(oracle, f"{stem}.energy_per_token.png", batch=batch)
    print(f"wrote {out_path}")
    return {**report.as_dict(), "clock": oracle.fit["clock"]}


def _fit_clock(oracle: Oracle, rows: pd.DataFrame) -> str:
    """Fit the clock parameters on the runs at other settings into `oracle` (its `clock` and
    `fit["clock"]`); the report's text. Without such runs the GPU's defaults stay."""
    if rows.empty:
        oracle.fit["clock"] = None
        return (
            "clock parameters: no runs at a locked clock or a power cap, so the GPU's defaults apply "
            "(oracle/clock_specs.py; most of their figures are ASSUMED): measure with grid=dvfs to fit them"
        )
    try:
        clock_spec(oracle.gpu)
    except ClockError as e:
        raise ValueError(
            f"{len(rows)} runs were measured at a locked clock or a power cap, but their GPU has no clock table to "
            f"fit clock parameters within ({e}); leave those runs out or add the GPU to oracle/clock_specs.py"
        ) from None
    est = ClockEstimator(oracle).fit(rows)
    assert est.spec_ is not None and est.report_ is not None
    oracle.clock = est.spec_
    oracle.fit["clock"] = est.report_.as_dict()
    return est.report_.text()


ConfigStore.instance().store(name="fit_schema", node=FitConfig)


@hydra.main(config_path="pkg://conf", config_name="fit", version_base="1.3")
def main(cfg: Any) -> None:
    """Hydra entry point."""
    if OmegaConf.is_missing(cfg, "measurements"):
        raise SystemExit("calibrate.fit: error: give the table to fit: measurements=FILE.csv (or .parquet)")
    try:
        c = OmegaConf.to_object(cfg)
        assert isinstance(c, FitConfig)
        fit_measurements(
            hydra.utils.to_absolute_path(c.measurements),
            hydra.utils.to_absolute_path(c.out),
            name=c.name,
            idle_power_w=c.idle_power_w,
            folds=c.folds,
            seed=c.seed,
            plots=c.plots,
        )
    except (MeasurementTableError, FileNotFoundError, ValueError, FitNotConvergedError) as e:
        raise SystemExit(f"calibrate.fit: error: {e}") from None


if __name__ == "__main__":
    main()

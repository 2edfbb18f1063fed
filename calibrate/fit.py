"""Fit an oracle to a measurement table and write it with its plots.

    python -m calibrate.fit measurements=FILE out=ORACLE.json [name=...] [idle_power_w=...]

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
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from calibrate.table import MeasurementTableError, read_table
from oracle import features as F
from oracle.fit import fit_oracle
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
    oracle, report = fit_oracle(table, name=name, idle_power_w=idle_power_w, folds=folds, seed=seed)
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
    print(f"step coefficients (per feature unit):\n{coefs}\n{report.text()}")
    if plots:
        stem = out_path.with_suffix("")
        batch = int(oracle.fitted_batch or 1)  # a one-batch oracle is plotted where it was measured
        plot_efficiency_heatmap(oracle, f"{stem}.heatmap.png", batch=batch)
        plot_energy_per_token(oracle, f"{stem}.energy_per_token.png", batch=batch)
    print(f"wrote {out_path}")
    return report.as_dict()


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

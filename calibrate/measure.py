"""Entry point: `python -m calibrate.measure backend=... model=... grid=... out=FILE [meter=none]`.

The composition root: it validates the Hydra config (schema in `calibrate.config`), builds the
meter, GPU-settings controller and backend, runs the sweep, fits the oracle when energy was
measured, and records the sweep as one MLflow run (grid, backend, model, GPU and driver as params;
the table, the per-point spread and the fit report as artifacts).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from calibrate.backends import make_backend
from calibrate.backends.base import BackendNotInstalledError, OutputLengthError
from calibrate.config import MeasureConf, MeterKind, register, to_grid, to_tracking
from calibrate.gpu_settings import GpuSettingsController
from calibrate.grid import Grid, GridError
from calibrate.lock import TableLockedError
from calibrate.meter import DeviceInfo, EnergyMeter, NullMeter, NvmlMeter
from calibrate.models import BUILTIN, ModelNotFoundError, model_label, resolve_model
from calibrate.nvml import NvmlError, NvmlSession, open_session
from calibrate.repeats import spread_by_point
from calibrate.signals import Terminated
from calibrate.sweep import Sweep, SweepOptions, SweepSummary
from calibrate.table import MeasurementTableError, read_table
from oracle.identify import UnidentifiableFitError
from oracle.regress import FitNotConvergedError
from oracle.run_power import ImplausiblePowerError
from tracking import log_run
from tracking.source import source_tags

log = logging.getLogger(__name__)
USER_ERRORS = (
    NvmlError,
    ModelNotFoundError,
    BackendNotInstalledError,
    GridError,
    MeasurementTableError,
    OutputLengthError,
    TableLockedError,
    ValueError,
)

register()


def load_conf(cfg: DictConfig) -> MeasureConf:
    """The typed config, with `out` and a model path resolved against the original directory."""
    conf = OmegaConf.to_object(cfg)
    assert isinstance(conf, MeasureConf)
    conf.out = to_absolute_path(conf.out)
    if conf.model not in BUILTIN:
        conf.model = to_absolute_path(conf.model)
    return conf


def build_meter(conf: MeasureConf, session: NvmlSession | None) -> EnergyMeter:
    if conf.meter is MeterKind.none or session is None:
        return NullMeter()
    n = conf.nvml
    return NvmlMeter(session, min_window_s=n.min_window_s, idle_settle_s=n.idle_settle_s, idle_window_s=n.idle_window_s)


def needs_nvml(conf: MeasureConf, grid: Grid) -> bool:
    return conf.meter is MeterKind.nvml or any(not s.is_default for s in grid.settings)


def run_measure(conf: MeasureConf) -> dict[str, Any]:
    """Run the sweep, fit, track; return a summary (rows, fit report, MLflow run id)."""
    grid = to_grid(conf.grid)
    model_dir = resolve_model(conf.model)
    session = open_session(conf.nvml.gpus) if needs_nvml(conf, grid) else None
    try:
        meter = build_meter(conf, session)
        controller = GpuSettingsController(session) if session else None
        summary, gpu = _sweep(conf, grid, model_dir, meter, controller)
    finally:
        if session is not None:
            session.close()
    return finish(conf, grid, summary, gpu)


def _sweep(
    conf: MeasureConf, grid: Grid, model_dir: Path, meter: EnergyMeter, controller: GpuSettingsController | None
) -> tuple[SweepSummary, DeviceInfo]:
    e = conf.engine
    backend = make_backend(
        conf.backend.value,
        model_dir,
        dtype=e.dtype,
        device=e.device,
        seed=conf.seed,
        tensor_parallel_size=e.tensor_parallel_size,
        free_gpu_memory_fraction=e.free_gpu_memory_fraction,
    )
    options = SweepOptions(
        model=conf.model_name or model_label(conf.model),
        out_path=Path(conf.out),
        seed=conf.seed,
        max_window_repeats=conf.max_window_repeats,
        progress=conf.progress,
    )
    try:
        summary = Sweep(grid, backend, meter, options, controller).run()
        gpu = meter.device_info() or DeviceInfo(gpu_name=backend.device_name())
    finally:
        backend.close()
    return summary, gpu


def finish(conf: MeasureConf, grid: Grid, summary: SweepSummary, gpu: DeviceInfo) -> dict[str, Any]:
    """Write the spread table, fit when energy was measured, log the MLflow run."""
    out = summary.out_path
    table = read_table(out, require_energy=False)
    spread_path = out.with_name(out.stem + ".spread.csv")
    spread = spread_by_point(table)
    spread.to_csv(spread_path, index=False)
    artifacts = [out, spread_path]
    report: dict[str, Any] = {}
    if summary.energy_measured and conf.fit:
        try:
            report, fit_artifacts = fit(out)
            artifacts += fit_artifacts
        except (UnidentifiableFitError, ImplausiblePowerError, FitNotConvergedError) as e:
            log.warning("not fitted: %s The rows are kept in %s.", e, out)
    else:
        log.info("timing-only sweep (meter=none): no energy to fit; the table is %s", out)
    params = {
        "grid": asdict(grid),
        "backend": conf.backend.value,
        "model": conf.model,
        "meter": conf.meter.value,
        "gpu": gpu.gpu_name,
        "driver": gpu.driver,
    }
    metrics = {
        "rows_written": summary.rows_written,
        "rows_skipped": summary.rows_skipped,
        "rows_total": len(table),
        **_spread_metrics(spread),
        "fit": report,
    }
    run_id = log_run(
        to_tracking(conf.tracking), params, metrics, artifacts, tags=source_tags("python -m calibrate.measure")
    )
    return {"summary": summary, "report": report, "run_id": run_id, "spread_path": spread_path}


def _spread_metrics(spread: pd.DataFrame) -> dict[str, float]:
    cols = ("energy_j_cv_pct", "duration_s_cv_pct")
    return {f"max_{c}": float(spread[c].max()) for c in cols if spread[c].notna().any()}


def fit(table_path: Path) -> tuple[dict[str, Any], list[Path]]:
    """Fit the oracle with `calibrate.fit`; write the report; return it and the files to log."""
    from calibrate.fit import fit_measurements

    oracle_path = table_path.with_name(table_path.stem + ".oracle.json")
    report = fit_measurements(table_path, oracle_path)
    report_path = table_path.with_name(table_path.stem + ".fit.json")
    report_path.write_text(json.dumps(report, indent=2, default=str))
    log.info(
        "fitted oracle %s: MAPE %.2f%% in-sample, %.2f%% cross-validated",
        oracle_path,
        report.get("mape_pct", float("nan")),
        report.get("cv_mape_pct", float("nan")),
    )
    plots = sorted(oracle_path.parent.glob(f"{oracle_path.stem}.*.png"))
    return report, [report_path, oracle_path, *plots]


def stopped_message(signal_name: str, out: Path | None) -> str:
    """The one line printed when a sweep is stopped by a signal: what is kept, how to resume."""
    if out is None or not out.exists():
        return f"calibrate.measure: stopped ({signal_name}) before any row was written"
    with out.open("rb") as f:
        rows = max(sum(1 for line in f if line.strip()) - 1, 0)
    return (
        f"calibrate.measure: stopped ({signal_name}); {rows} row(s) kept in {out}; "
        "run the same command again to resume (points already measured are skipped)"
    )


@hydra.main(config_path="pkg://conf/calibrate", config_name="measure", version_base="1.3")
def main(cfg: DictConfig) -> None:
    conf: MeasureConf | None = None
    try:
        conf = load_conf(cfg)
        result = run_measure(conf)
    except USER_ERRORS as e:
        raise SystemExit(f"calibrate.measure: {type(e).__name__}: {e}") from e
    except (KeyboardInterrupt, Terminated) as e:
        signal_name, status = ("SIGINT", 130) if isinstance(e, KeyboardInterrupt) else ("SIGTERM", 143)
        print(stopped_message(signal_name, None if conf is None else Path(conf.out)), file=sys.stderr)
        raise SystemExit(status) from None
    s = result["summary"]
    print(f"{s.rows_written} row(s) written, {s.rows_skipped} already in {s.out_path}")


if __name__ == "__main__":
    main()

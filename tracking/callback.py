"""Hydra callbacks (registered under `hydra.callbacks` in conf/sim.yaml). `SweepTracking`: before a
multirun's jobs start, in the launching process, create the MLflow store and experiment once, open
the sweep's parent run and write `sweep.json` into the sweep folder; at the end, write the report
comparing the sweep's runs (tracking.report) into `<sweep>/report`, attach it to the parent run
(artifacts `report/`), close the parent run, and print the runs' combined table and the command
that writes the report again (the jobs print one line each: see sim.app). With tracking off, the
report and the table come from the jobs' own folders (`tracking.report.load_folders`). `Redaction`: Hydra's
own copies of the config and the overrides (.hydra/*.yaml, multirun.yaml) and its log lines hold
URIs without their credentials, like every other file and line of a run.

Creating the store here, not in the jobs, is what keeps parallel jobs from racing to create and
migrate a new SQLite store. A tracking failure here is one warning; the jobs still run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from tracking.artifacts import store_artifacts
from tracking.log import failure
from tracking.safe_text import redact, redact_file, redact_log_records, redacted_stdout, shell_command
from tracking.store import TrackingConfig, ensure_experiment, http_limits, store_lock
from tracking.sweep import SweepInfo, swept_keys

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REPORT_DIR = "report"


def _tracking(config: DictConfig) -> TrackingConfig | None:
    """The run's tracking config, or None (disabled, or invalid: the jobs report that)."""
    values = OmegaConf.to_container(config.get("tracking") or {}, resolve=True)
    try:
        tracking = TrackingConfig(**values)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return tracking if tracking.enabled else None


class SweepTracking(Callback):
    """Store, experiment and parent run of a multirun, made once before its jobs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        params = config.hydra.sweeper.get("params") or {}
        swept = swept_keys(list(config.hydra.overrides.task), [str(k) for k in params])
        tracking = _tracking(config)
        parent = None
        if tracking is not None:
            try:
                parent = _parent_run(tracking, sweep_dir, swept)
            except Exception as e:  # noqa: BLE001 - the jobs run and report tracking themselves
                log.warning("MLflow: could not open the sweep's parent run at %r (%s)", tracking.shown_uri, failure(e))
        SweepInfo(str(sweep_dir), swept, parent).write(sweep_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        tracking = _tracking(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        info = SweepInfo.read(sweep_dir)
        out, table = sweep_dir / REPORT_DIR, None
        if tracking is None:  # no MLflow: the report from the jobs' folders
            table = folder_report(sweep_dir, out)
            if table is not None:
                print(sweep_console(table, shell_command("python", "-m", "sim.report", "--folders", sweep_dir,
                                                         "--out", out), out), flush=True)  # fmt: skip
            return
        if info.parent_run_id is None:
            return
        try:
            from mlflow import MlflowClient

            http_limits(tracking)
            table = sweep_report(tracking, info.parent_run_id, out)
            with store_lock(tracking), redacted_stdout():
                client = MlflowClient(tracking.uri)
                store_artifacts(client, info.parent_run_id, [out] if table is not None else [])
                client.set_terminated(info.parent_run_id, "FINISHED")
        except Exception as e:  # noqa: BLE001
            log.warning("MLflow: could not close the sweep's parent run (%s)", failure(e))
        if table is not None:
            command = shell_command(
                "python", "-m", "sim.report", "--tracking-uri", tracking.shown_uri, "--experiment",
                tracking.experiment, "--parent", info.parent_run_id, "--out", out,
            )  # fmt: skip
            print(sweep_console(table, command, out, "also the sweep's parent run's artifacts; "), flush=True)


class Redaction(Callback):
    """Redact the log lines of the launching process and of each job, and the files Hydra saved
    before the job starts: .hydra/*.yaml and a sweep's multirun.yaml."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        redact_log_records()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        redact_log_records()
        hydra = config.hydra
        saved = (
            [] if hydra.output_subdir is None else Path(hydra.runtime.output_dir, hydra.output_subdir).glob("*.yaml")
        )
        sweep = [Path(str(hydra.sweep.dir), "multirun.yaml")] if hydra.mode == RunMode.MULTIRUN else []
        for path in [*saved, *sweep]:
            if path.is_file():
                redact_file(path)


def sweep_report(tracking: TrackingConfig, parent_run_id: str, out: Path) -> pd.DataFrame | None:
    """Write the comparison of the parent run's runs (`tracking.report.write_report`) into `out`;
    its table, or None after one warning when there is nothing to compare (every job failed)."""
    from tracking.report import ReportError, comparison_table, load_runs, write_report

    try:
        with redacted_stdout():
            table = comparison_table(load_runs(tracking.uri, tracking.experiment, parent=parent_run_id))
    except ReportError as e:
        log.warning("MLflow: no report for the sweep's parent run (%s)", redact(str(e)))
        return None
    write_report(table, out, title=f"Sweep {out.parent.name}")
    return table


def folder_report(sweep_dir: Path, out: Path) -> pd.DataFrame | None:
    """Write the comparison of the runs in the sweep's job folders into `out` (a sweep with tracking
    off); its table, or None after one warning when there is nothing to compare."""
    from tracking.report import ReportError, comparison_table, load_folders, write_report

    try:
        table = comparison_table(load_folders(sweep_dir))
    except ReportError as e:
        log.warning("no report for the sweep (%s)", redact(str(e)))
        return None
    write_report(table, out, title=f"Sweep {out.parent.name}")
    return table


def sweep_console(table: pd.DataFrame, command: str, out: Path, also: str = "") -> str:
    """What a sweep prints at its end: the combined table of its runs, where the full report is
    (`also`: where else), and the command (quoted for a shell) that writes it again."""
    from tracking.clock_sweep import clock_sweeps, describe
    from tracking.report import console_table

    clocks = "".join(f"clock sweep ({name}): {describe(s)}\n" for name, s in clock_sweeps(table).items())
    return (
        f"sweep of {len(table)} runs ({out.parent}):\n{console_table(table)}\n{clocks}"
        f"full report (comparison.md, pareto.md, plots) in {out}, {also}to write it again:\n{command}"
    )


def _parent_run(tracking: TrackingConfig, sweep_dir: Path, swept: tuple[str, ...]) -> str:
    from mlflow import MlflowClient

    experiment_id = ensure_experiment(tracking)
    with store_lock(tracking):
        tags = {**tracking.tags, "sweep": str(sweep_dir), "swept": " ".join(swept), "kind": "sweep"}
        run = MlflowClient(tracking.uri).create_run(experiment_id, tags=tags, run_name=f"sweep {sweep_dir.name}")
    return run.info.run_id

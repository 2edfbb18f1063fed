"""Track a run from a helper process that imports MLflow while the simulation runs.

Importing MLflow's SQLite store takes longer than simulating a shipped trace (1.5 to 2.8 s on a
2-core machine, and about 1 s more to create a new store), so a single `python -m sim` starts
`python -m tracking.background` first thing. Once the run's inputs are valid (`open`) it imports
MLflow and creates the store and experiment under the store lock, on a second core while the run
simulates; on a busy machine, where it would slow the simulation, only once the table is printed.
When the run's folder is written (run.json included), either

- `finish` hands the helper the folder and returns at once (`background=true`, the default): the
  helper, in its own session so that closing the terminal does not stop it, draws the plots from
  the folder (`sim.plots.compare.plot_folder`), adds them to run.json's artifacts, logs the run and writes
  the outcome to the folder's tracking.json (`TRACKED_FILE`): the run id, or the error, which it
  also prints to the terminal with the command that logs the folder later; or
- `log` hands it the folder and waits for the run id.

No run is lost: a helper that cannot start or dies before it answers leaves the folder to be
logged in this process (`log`), or to `python -m tracking FOLDER` (`finish`: tracking.json then
holds no run id); a tracking error is reported as the same one warning `log_run` gives. Messages
are JSON lines: to the helper's stdin its TrackingConfig, then "open", then {"folder": path,
"plots": bool, "detach": bool}; back, on a private copy of its stdout and only when not detached,
{"run_id": id} or {"error": text}.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import IO

from tracking.safe_text import shell_command
from tracking.store import TrackingConfig

log = logging.getLogger(__name__)

OPEN = "open"


class BackgroundTracking:
    """The parent's handle on the helper process (see the module docstring)."""

    def __init__(self, process: subprocess.Popen[str], config: TrackingConfig) -> None:
        self._process = process
        self._config = config
        self._opened = False

    @classmethod
    def start(cls, config: TrackingConfig) -> BackgroundTracking | None:
        """Start the helper (None when tracking is off or the helper cannot start)."""
        if not config.enabled:
            return None
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "tracking.background"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, env=_child_env(), start_new_session=True,
            )  # fmt: skip
        except OSError as e:
            log.info("MLflow helper process did not start (%s); tracking in this process", e)
            return None
        handle = cls(process, config)
        handle._send(asdict(config))
        return handle

    def open(self, *, only_if_idle: bool = False) -> None:
        """Let the helper import MLflow and create the store and experiment (the run's inputs are
        valid); `only_if_idle`: only if a core is free now, where it would not slow the simulation."""
        if self._opened or (only_if_idle and not core_free()):
            return
        self._opened = True
        self._send(OPEN)

    def log(self, folder: Path) -> str | None:
        """Log the run in `folder` (written, run.json included); its run id, or None after a warning."""
        from tracking.folder import log_folder, retry_hint
        from tracking.log import warn_failed

        self._opened = True
        self._send({"folder": str(folder)})
        reply = self._process.stdout.readline() if self._process.stdout else ""
        self.close()
        self._process.wait()
        if not reply:
            log.info("MLflow helper process exited (%s) without an answer; tracking in this process",
                     self._process.poll())  # fmt: skip
            return log_folder(folder, uri=self._config.uri)  # run.json's URI has no credentials
        answer = json.loads(reply)
        if answer.get("error"):
            warn_failed(self._config, answer["error"], retry_hint(folder))
            return None
        return str(answer["run_id"])

    def finish(self, folder: Path, *, plots: bool) -> None:
        """Hand the helper the run in `folder` (written, run.json included) to draw its plots (if
        `plots`) and log it after this process ends; returns at once (see the module docstring)."""
        self._opened = True
        self._send({"folder": str(folder), "plots": plots, "detach": True})
        self.close()

    def close(self) -> None:
        """End the helper: before `open` it has not touched the store and is stopped at once;
        after, it finishes what it is doing to the store and exits on its own."""
        if self._process.stdin and not self._process.stdin.closed:
            try:
                self._process.stdin.close()
            except OSError:
                pass
        if not self._opened and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def _send(self, message: object) -> None:
        try:
            assert self._process.stdin is not None
            self._process.stdin.write(json.dumps(message) + "\n")
            self._process.stdin.flush()
        except OSError:  # the helper died: `log` notices and tracks in this process
            pass


def core_free() -> bool:
    """Whether a core is free for the helper beside the run's own (1-minute load average)."""
    if not hasattr(os, "getloadavg"):
        return True
    return os.getloadavg()[0] <= (os.cpu_count() or 1) - 1.5


def _child_env() -> dict[str, str]:
    """This environment, with the folder holding the `tracking` package first on PYTHONPATH."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, path]) if path else root}


def serve(lines: Iterable[str], reply: Callable[[dict[str, str | None]], None]) -> None:
    """The helper's side: read the config, import MLflow, open the store on "open", draw the plots
    and log the folder it is given, then answer (or, detached, settle the folder); stop at the end
    of input."""
    from tracking.folder import log_folder

    messages = (json.loads(line) for line in lines)
    first = next(messages, None)
    if first is None:  # the parent ended before sending the config
        return
    config = TrackingConfig(**first)
    error = None
    for message in messages:
        if message == OPEN:
            error = _open_store(config)
            continue
        folder = Path(message["folder"])
        plotted = _draw_plots(folder) if message.get("plots") else None
        if error is None:
            _load_mlflow()
        logging_it = partial(log_folder, folder, uri=config.uri, raise_errors=True)  # run.json's has no credentials
        run_id, error = (None, error) if error else _attempt(logging_it)
        if message.get("detach"):
            settle(folder, config, run_id, error, plotted)
        else:
            reply({"run_id": run_id, "error": error})
        return


def _open_store(config: TrackingConfig) -> str | None:
    """Import MLflow and create the store and experiment; the error, if any."""
    from tracking.store import ensure_experiment

    _load_mlflow()
    return _attempt(partial(ensure_experiment, config))[1]


def _load_mlflow() -> None:
    """Import MLflow's SQLite store (once), its INFO lines silenced: the parent reports the outcome."""
    from tracking.store import load_store_modules

    load_store_modules()
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "Creating initial MLflow database tables..."


def _draw_plots(folder: Path) -> str | None:
    """Draw the run's plots and add them to its run.json's artifacts; what failed, if anything."""
    from tracking.folder import RunRecord

    try:
        from sim.plots.compare import plot_folder

        names = tuple(plot_folder(folder))
    except Exception as e:  # noqa: BLE001 - the run is logged without plots, and the failure said
        return f"{type(e).__name__}: {e}"
    record = RunRecord.read(folder)
    kept = tuple(a for a in record.artifacts if a not in names)
    replace(record, artifacts=(*kept, *names)).write(folder)
    return None


def settle(folder: Path, config: TrackingConfig, run_id: str | None, error: str | None, plots: str | None) -> None:
    """A detached helper's end: the outcome in the folder's tracking.json and, if anything
    failed, one line on the terminal saying what and how to finish it."""
    from tracking.folder import mark_tracked, retry_hint

    if run_id is None:
        mark_tracked(folder, config, None, error or "the run was not logged")
    if plots is not None:
        print(f"sweetspot-sim: the plots of the run in {folder} were not drawn ({plots}); "
              f"draw them with: {shell_command('python', '-m', 'sim.plots', folder)}", file=sys.stderr)  # fmt: skip
    if error is not None:
        print(f"sweetspot-sim: the run in {folder} was not logged to MLflow ({config.shown_uri}): {error}; "
              f"log it later with: {retry_hint(folder)}", file=sys.stderr)  # fmt: skip


def _attempt(action: Callable[[], str | None]) -> tuple[str | None, str | None]:
    """(the action's value, None), or (None, what failed): the parent reports it."""
    from tracking.log import failure

    try:
        return action(), None
    except Exception as e:  # noqa: BLE001 - any tracking failure is reported, never lost
        return None, failure(e)


def main() -> None:
    """Serve the parent on stdin; answers go to the real stdout, anything printed to stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent; this ends on end of input
    answers: IO[str] = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr

    def reply(answer: dict[str, str | None]) -> None:
        answers.write(json.dumps(answer) + "\n")
        answers.flush()

    serve(sys.stdin, reply)
    sys.stderr.flush()
    os._exit(0)  # the run is logged and terminated: skip MLflow's exit hooks, the parent waits for this


if __name__ == "__main__":
    main()

"""Track a run from a helper process that imports MLflow while the simulation runs.

Importing MLflow's SQLite store takes longer than simulating a shipped trace (1.5 to 2.8 s on a
2-core machine, and about 1 s more to create a new store), so a single `python -m sim` starts
`python -m tracking.background` first thing. Once the run's inputs are valid (`open`) it imports
MLflow and creates the store and experiment under the store lock, on a second core while the run
simulates; on a busy machine, where it would slow the simulation, only once the table is printed,
while the plots are drawn. When the run's folder is written (run.json included), `log` hands the
helper the folder and waits for the run id.

No run is lost: a helper that cannot start or dies before it answers leaves the folder to be
logged in this process; a tracking error comes back as text and is reported here as the same one
warning `log_run` gives. Messages are JSON lines: to the helper's stdin its TrackingConfig, then
"open", then {"folder": path}; back, on a private copy of its stdout, {"run_id": id} or
{"error": text}.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import IO

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
                text=True, env=_child_env(),
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
            return log_folder(folder)
        answer = json.loads(reply)
        if answer.get("error"):
            warn_failed(self._config, answer["error"], retry_hint(folder))
            return None
        return str(answer["run_id"])

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
    """The helper's side: read the config, import MLflow, open the store on "open", log the
    folder it is given and answer; stop at the end of input."""
    from tracking.folder import log_folder
    from tracking.store import ensure_experiment, load_store_modules

    messages = (json.loads(line) for line in lines)
    first = next(messages, None)
    if first is None:  # the parent ended before sending the config
        return
    config = TrackingConfig(**first)
    error = None
    for message in messages:
        if message == OPEN:
            load_store_modules()
            logging.getLogger("mlflow").setLevel(logging.WARNING)  # no "Creating initial MLflow database tables..."
            _, error = _attempt(partial(ensure_experiment, config))
            continue
        run_id, error = (None, error) if error else _attempt(partial(log_folder, Path(message["folder"]),
                                                                     raise_errors=True))  # fmt: skip
        reply({"run_id": run_id, "error": error})
        return


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

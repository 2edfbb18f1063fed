"""One folder, one MLflow run: a claim on a run's folder while it is logged.

The claim is a file lock in the folder (`.tracking.lock`, released by the system when its holder
dies, SIGKILL included) beside a note of the holder's pid (`.tracking.pid`). A second logger of
the same folder (`python -m tracking FOLDER` twice, or while the background logger is at work)
waits for the first, then finds the folder logged (its tracking.json) instead of logging it again.
A logger killed mid-way leaves its MLflow run RUNNING, tagged with the folder (`FOLDER_TAG`): the
next logger of the folder finds it and finishes that run (`tracking.log`) instead of adding one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tracking.store import TrackingError

LOCK_FILE = ".tracking.lock"
PID_FILE = ".tracking.pid"
FOLDER_TAG = "folder"
"""The MLflow tag holding the absolute path of the folder a run was logged from."""


def folder_key(folder: Path) -> str:
    """The value of `FOLDER_TAG` for `folder`."""
    return str(folder.resolve())


def holder(folder: Path) -> int | None:
    """The pid of the process logging `folder` (None if unknown)."""
    try:
        return int((folder / PID_FILE).read_text())
    except (OSError, ValueError):
        return None


@contextmanager
def claim(folder: Path, timeout_s: float, waiting: Callable[[int | None], None] | None = None) -> Iterator[None]:
    """Hold the folder's claim; if another process holds it, call `waiting` with its pid and wait
    for it at most `timeout_s` seconds (then TrackingError naming it)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(folder / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        pid = holder(folder)
        if waiting is not None:
            waiting(pid)
        try:
            lock.acquire(timeout=timeout_s)
        except Timeout as e:
            raise TrackingError(
                f"{folder} is still being logged by pid {pid} after {timeout_s:g} s; try again once it ends"
            ) from e
    try:
        (folder / PID_FILE).write_text(f"{os.getpid()}\n")
        yield
    finally:
        (folder / PID_FILE).unlink(missing_ok=True)
        lock.release()

"""One measurement sweep per table: a lock file next to `out=` naming who holds it.

`<out>.lock` holds the holder's pid, host and start time (JSON). A second sweep on the same table
refuses and says who holds it; a lock left by a process that is gone (killed with SIGKILL, or a
crash) on this host is taken over with a message. The lock is removed when the sweep ends.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TableLockedError(RuntimeError):
    """Another sweep is writing the same measurement table."""


def lock_path(table: Path) -> Path:
    """The lock file of a measurement table."""
    return table.with_name(table.name + ".lock")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder(info: dict[str, Any]) -> str:
    return f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started {info.get('started', '?')}"


def _create(path: Path, info: dict[str, Any]) -> bool:
    """Create the lock atomically; False if it already exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
        f.flush()
        os.fsync(f.fileno())
    return True


@contextmanager
def table_lock(table: Path) -> Iterator[Path]:
    """Hold `<table>.lock` for the block; raises TableLockedError naming the live holder."""
    table.parent.mkdir(parents=True, exist_ok=True)
    path = lock_path(table)
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if not _create(path, me):
        held = _read(path)
        pid = held.get("pid")
        stale = held.get("host") == me["host"] and isinstance(pid, int) and not _alive(pid)
        if not stale:
            raise TableLockedError(
                f"{table} is being measured by {_holder(held)} (lock file {path}). Wait for that sweep to "
                "finish or stop it, or pass another out=FILE; if that process is gone (another host, "
                "or the lock file is unreadable), delete the lock file."
            )
        log.warning("%s: taking over the lock of %s, which is no longer running", table, _holder(held))
        path.unlink(missing_ok=True)
        if not _create(path, me):
            raise TableLockedError(f"{table} is being measured by {_holder(_read(path))} (lock file {path})")
    try:
        yield path
    finally:
        if _read(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)

"""Warnings on a command's console: each distinct one once per process, through `logging`.

Library code warns with `warnings.warn` (so Python callers can filter or catch each category);
the command-line entry points call `show_warnings_once()`. From then on a warning is logged on
the `sweetspot` logger as one line, `warning (Category): text`, without Python's echo of the
source line, and only the first time its category and text are seen in this process: a capacity
search or a validation that simulates the same workload many times says it once. A progress bar
on the terminal is cleared while the line is written, so the two never share a line.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger("sweetspot")

_seen: set[tuple[str, str]] = set()


def show_warnings_once() -> None:
    """Route this process's warnings to `log`, each distinct (category, text) once."""
    warnings.showwarning = _log_once
    if not logging.getLogger().handlers and not log.handlers:  # no logging set up (not under Hydra)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.propagate = False


def _log_once(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """`warnings.showwarning`'s replacement (same signature): log the warning if it is new."""
    key = (category.__name__, str(message))
    if key in _seen:
        return
    _seen.add(key)
    with tqdm.external_write_mode(file=sys.stderr):
        log.warning("warning (%s): %s", *key)

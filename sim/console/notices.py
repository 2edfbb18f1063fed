"""Warnings on a command's console: each distinct one once per process, through `logging`.

Library code warns with `warnings.warn` (so Python callers can filter or catch each category);
the command-line entry points call `show_warnings_once()`. From then on a warning is logged on
the `sweetspot` logger as one line, `warning (Category): text`, without Python's echo of the
source line, and only the first time its category and text, figures and quoted names aside, are
seen in this process: a capacity search or a validation that simulates many workloads on many
oracles says it once, and at the process's (or a sweep job's) end a line per category counts the
repeats that differed only in their figures or names. A progress bar on the terminal is cleared
while a line is written, so the two never share a line.
"""

from __future__ import annotations

import atexit
import logging
import re
import sys
import warnings
from collections import Counter
from typing import TextIO

from tqdm import tqdm

log = logging.getLogger("sweetspot")

_FIGURES = re.compile(r"\d[\d,.]*")
_NAMES = re.compile(r"'[^'\n]*'")  # quoted names (an oracle's, a file's): a validation warns the same of 40 oracles
_seen: set[tuple[str, str]] = set()  # (category, text) shown or counted, and their figure-free forms
_repeats: Counter[tuple[str, str]] = Counter()


def show_warnings_once() -> None:
    """Route this process's warnings to `log`, each distinct (category, text figures aside) once."""
    if warnings.showwarning is not _log_once:
        warnings.showwarning = _log_once
        atexit.register(count_repeats)
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
    text = str(message)
    key = (category.__name__, _FIGURES.sub("#", _NAMES.sub("'…'", text)))
    if key in _seen:
        if (category.__name__, text) not in _seen:  # the same warning again is not news
            _seen.add((category.__name__, text))
            _repeats[key] += 1
        return
    _seen.update((key, (category.__name__, text)))
    _say("warning (%s): %s", category.__name__, text)


def count_repeats() -> None:
    """A line per category: the warnings held back for repeating one already shown, since the last count. At
    the process's end, and at the end of each `python -m sim` job (a sweep's worker process runs
    several and outlives the sweep's closing table)."""
    counts: Counter[str] = Counter()
    for (category, _), n in _repeats.items():
        counts[category] += n
    for category, n in sorted(counts.items()):
        _say(
            "warning (%s): %s more like the one shown earlier, with other figures or names, not shown",
            category,
            f"{n:,}",
        )
    _repeats.clear()


def _say(fmt: str, *args: object) -> None:
    with tqdm.external_write_mode(file=sys.stderr):
        log.warning(fmt, *args)

"""Checks on the files a user names (traces, measurement tables, oracles) before anything reads them.

A FIFO blocks a reader forever, a device such as /dev/zero never ends, and a huge file without
line ends makes a line reader hold all of it in memory: every user-given file is checked to be a
regular file first, and a first line is read with a size bound. This module imports nothing heavy,
so every package may use it.
"""

from __future__ import annotations

import gzip
import stat
from pathlib import Path

MAX_LINE_BYTES = 1 << 20  # longest first (header) line read from a text file, bytes: 1 MiB

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotARegularFileError(ValueError):
    """A user-given path that is a FIFO, device, directory or socket, or larger than allowed."""


def require_regular_file(path: str | Path, what: str, max_bytes: int | None = None) -> Path:
    """`path` if it names an existing regular file (of at most `max_bytes` bytes when given).

    Raises FileNotFoundError when nothing is there, NotARegularFileError otherwise; `what` names
    the file in the message, e.g. "trace file". Only `stat` is called: nothing is opened.
    """
    path = Path(path)
    try:
        mode = path.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(mode.st_mode):
        kind = next((name for test, name in _KINDS if test(mode.st_mode)), "not a plain file")
        raise NotARegularFileError(f"{what} {path} is not a regular file ({kind})")
    if max_bytes is not None and mode.st_size > max_bytes:
        raise NotARegularFileError(
            f"{what} {path} holds {mode.st_size:,} bytes, more than the {max_bytes:,} such a file can hold"
        )
    return path


def read_first_line(path: Path, what: str, limit: int = MAX_LINE_BYTES) -> bytes:
    """The first line of a regular text file (gunzipped for .gz), at most `limit` bytes read.

    Raises NotARegularFileError for a non-regular file and ValueError for a first line longer
    than `limit`: no text format this project reads has a header that long.
    """
    require_regular_file(path, what)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        line = fh.readline(limit + 1)
    if len(line) > limit:
        raise ValueError(f"the first line of {path} is longer than {limit / (1 << 20):g} MiB: not a CSV {what}")
    return line

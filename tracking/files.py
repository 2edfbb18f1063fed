"""A run's files are written whole or not at all: to a temporary name in the same folder, renamed
to their own name once complete.

A run killed mid-write leaves at most a hidden `.NAME.PID.tmp.EXT` file, never a half-written file
under its final name; a write that fails (a full disk) raises `WriteError`, whose one-line
message names the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WriteError(OSError):
    """A file that could not be written; the message names it and why (e.g. no space left)."""


def write_error(path: Path, error: OSError) -> WriteError:
    """The one-line error for `path` (kept as is if it already is one)."""
    if isinstance(error, WriteError):
        return error
    out = WriteError(f"could not write {path} ({error.strerror or error}); nothing was written under that name")
    out.errno = error.errno
    return out


def temporary(path: Path) -> Path:
    """Where `path` is written until complete: hidden, in the same folder (so the rename is atomic),
    with the same extension (writers that choose the format by it still work)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temporary path to write; renamed to `path` when the block ends, removed if it raises
    (an OSError becomes a `WriteError` naming `path`)."""
    tmp = temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, WriteError):
            raise write_error(path, e) from e
        raise


def write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` whole (see `replacing`)."""
    with replacing(path) as tmp:
        tmp.write_text(text)
    return path

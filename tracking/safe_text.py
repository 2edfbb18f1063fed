"""What a run shows the world: URIs without their credentials, commands quoted for a shell.

A tracking URI such as `http://alice:PASSWORD@host:5000` connects with its credentials, but every
file, log line, console message and MLflow parameter or tag a run writes holds it as
`http://***@host:5000` (`redact`): the server stays recognisable, the secret does not leave the
process. MLflow also reads the credentials from MLFLOW_TRACKING_USERNAME and
MLFLOW_TRACKING_PASSWORD, which keeps them out of the URI altogether.

Every command the project prints for a user to paste goes through `shell_command`, so a folder
named `run x;touch PWNED;#` is one quoted argument, not three commands.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

MASK = "***"

# scheme://userinfo@ : userinfo runs to the last "@" before the host's end ("/", "?", "#" or a space),
# so a password holding an unencoded "@" is masked whole; Hydra escapes ":" in a multirun's overrides
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*\\?://)[^/?#\s]*@")


def redact(text: str) -> str:
    """`text` with the credentials of every URI in it replaced by ***."""
    return _USERINFO.sub(rf"\g<scheme>{MASK}@", text)


def redact_tree(value: Any) -> Any:
    """A copy of nested mappings, lists and tuples with every string (keys too) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_tree(k): redact_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_tree(v) for v in value)
    return value


def redact_log_records() -> None:
    """Redact the message of every log record this process creates from now on (Hydra's own lines,
    such as a multirun's "#0 : overrides", and MLflow's); installed once, kept when logging is
    reconfigured."""
    make = logging.getLogRecordFactory()
    if getattr(make, "redacts", False):
        return

    def redacting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        message = record.getMessage()
        if redact(message) != message:
            record.msg, record.args = redact(message), None
        return record

    redacting.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacting)


@contextlib.contextmanager
def redacted_stdout() -> Iterator[None]:
    """Print what the code inside prints to stdout (MLflow's "View run at URL" lines) once it
    ends, redacted."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        sys.stdout.write(redact(buffer.getvalue()))
        sys.stdout.flush()


def redact_file(path: Path) -> None:
    """Rewrite the text file at `path` redacted, if it holds credentials (atomically: a reader
    sees the old or the new file; several processes may do it at once)."""
    text = path.read_text()
    clean = redact(text)
    if clean != text:
        part = path.with_name(f".{path.name}.{os.getpid()}.part")
        part.write_text(clean)
        os.replace(part, path)


def shell_command(*args: object) -> str:
    """The command a user pastes into a shell to run `args` (each quoted as one argument)."""
    return shlex.join(str(a) for a in args)

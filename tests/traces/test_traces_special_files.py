"""Trace files that are not files, or whose first line never ends: refused at once, in one line.

Before, a FIFO blocked forever, /dev/zero ended in a MemoryError and a huge file without line
ends was read whole by the header check.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import traces
from oracle.files import NotARegularFileError
from tests import subprocess_env
from tests.oracle.test_files import raised_in_subprocess

ROOT = Path(__file__).resolve().parents[2]


def _one_long_line(tmp_path: Path) -> Path:
    path = tmp_path / "one_line.csv"
    path.write_bytes(b"arrival_s" * 600_000)  # 5.4 MB, no line end
    return path


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    return path


CASES = {
    "fifo": (_fifo, "trace file {} is not a regular file (a FIFO)"),
    "dev_zero": (lambda _: Path("/dev/zero"), "trace file {} is not a regular file (a character device)"),
    "directory": (lambda tmp: tmp, "trace file {} is not a regular file (a directory)"),
    "one_long_line": (_one_long_line, "the first line of {} is longer than 1 MiB: not a CSV trace file"),
}


@pytest.mark.parametrize("case", CASES)
def test_command_line_gives_one_line_at_once(tmp_path, case):
    make, message = CASES[case]
    path = make(tmp_path)
    env = subprocess_env()
    args = ["trace=file", f"trace.path={path}", f"output_dir={tmp_path / 'out'}", "progress=false"]
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sim", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert time.monotonic() - start < 30
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"error: trace 'file': {message.format(path)}"]


@pytest.mark.parametrize("case", ["fifo", "dev_zero"])
def test_loader_refuses_fifos_and_devices(tmp_path, case):
    make, message = CASES[case]
    path = make(tmp_path)
    assert raised_in_subprocess(f"traces.load({str(path)!r})") == f"NotARegularFileError: {message.format(path)}"


def test_loader_refuses_a_directory(tmp_path):
    with pytest.raises(NotARegularFileError, match="is not a regular file \\(a directory\\)"):
        traces.load_config({"name": "file", "path": str(tmp_path)})


def test_loader_refuses_a_huge_first_line_quickly(tmp_path):
    path = _one_long_line(tmp_path)
    start = time.monotonic()
    with pytest.raises(ValueError, match="longer than 1 MiB: not a CSV trace file"):
        traces.load(path)
    assert time.monotonic() - start < 2.0

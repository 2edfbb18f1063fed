"""User-given files: FIFOs, devices and directories are refused before any read; first lines are bounded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import oracle.files
from oracle.files import MAX_LINE_BYTES, NotARegularFileError, read_first_line, require_regular_file
from tests import subprocess_env

ROOT = Path(__file__).resolve().parents[2]


def raised_in_subprocess(call: str, timeout_s: float = 30.0) -> str:
    """Run `call` (a Python expression, e.g. "traces.load('/x')") in a fresh interpreter and return
    "ExceptionClass: message" of what it raised ("" if nothing). A FIFO read would block forever, so
    the call runs in a subprocess whose timeout fails the test instead of hanging the suite."""
    code = (
        f"import calibrate.table, oracle.model, traces\ntry:\n    {call}\n"
        "except Exception as e:\n    print(f'{type(e).__name__}: {e}')"
    )
    env = subprocess_env()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout_s, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe.csv"
    os.mkfifo(path)
    return path


def test_regular_files_pass(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("x\n")
    assert require_regular_file(path, "table") == path


@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda p: os.mkfifo(p), "a FIFO"),
        (lambda p: p.mkdir(), "a directory"),
    ],
)
def test_non_regular_files_are_refused_by_kind(tmp_path, make, kind):
    path = tmp_path / "x.csv"
    make(path)
    with pytest.raises(NotARegularFileError, match=f"^trace file {path} is not a regular file \\({kind}\\)$"):
        require_regular_file(path, "trace file")


def test_devices_are_refused():
    with pytest.raises(
        NotARegularFileError, match="^oracle file /dev/zero is not a regular file \\(a character device\\)"
    ):
        require_regular_file("/dev/zero", "oracle file")


def test_missing_files_are_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="measurement table .*nope.csv does not exist"):
        require_regular_file(tmp_path / "nope.csv", "measurement table")


def test_size_bound(tmp_path):
    path = tmp_path / "big.json"
    path.write_bytes(b"0" * 2000)
    assert require_regular_file(path, "oracle file", max_bytes=2000) == path
    with pytest.raises(NotARegularFileError, match="holds 2,000 bytes, more than the 1,999"):
        require_regular_file(path, "oracle file", max_bytes=1999)


def test_first_line_is_read_with_a_bound(tmp_path, monkeypatch):
    """A 5 MB line without a line end is refused after reading at most 1 MiB of it."""
    path = tmp_path / "one_line.csv"
    path.write_bytes(b"a" * 5_000_000)
    asked: list[int] = []

    def recording_open(file, mode):
        handle = open(file, mode)  # noqa: SIM115 (closed by the caller's with-block)
        readline = handle.readline
        handle.readline = lambda size=-1: asked.append(size) or readline(size)  # type: ignore[method-assign]
        return handle

    monkeypatch.setattr(oracle.files, "open", recording_open, raising=False)
    with pytest.raises(ValueError, match=f"^the first line of {path} is longer than 1 MiB: not a CSV trace file$"):
        read_first_line(path, "trace file")
    assert asked == [MAX_LINE_BYTES + 1]


def test_first_line_of_a_normal_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("arrival_s,n_in,n_out\n0,1,2\n")
    assert read_first_line(path, "trace file") == b"arrival_s,n_in,n_out\n"

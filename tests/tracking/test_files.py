"""Files written whole or not at all: a failed or interrupted write leaves nothing under the name."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tracking.files import WriteError, replacing, write_text


def test_a_file_appears_under_its_name_only_once_complete(tmp_path):
    path = tmp_path / "summary.json"
    with replacing(path) as tmp:
        tmp.write_text("{}")
        assert not path.exists() and tmp.parent == tmp_path and tmp.suffix == ".json"
    assert path.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path, error):
    path = write_text(tmp_path / "run.json", "old")

    def fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise error

    with pytest.raises(WriteError if isinstance(error, OSError) else KeyboardInterrupt) as raised:
        with replacing(path) as tmp:
            fail(tmp)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["run.json"]
    if isinstance(error, OSError):
        assert str(raised.value) == (
            f"could not write {path} (No space left on device); nothing was written under that name"
        )
        assert raised.value.errno == errno.ENOSPC

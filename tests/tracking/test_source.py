"""mlflow.source.* tags: the commit read from a checkout's files (main checkout, packed refs,
detached HEAD, worktree), checked against `git rev-parse HEAD` on real repositories."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tracking.source import GIT_COMMIT, ROOT, SOURCE_NAME, SOURCE_TYPE, git_commit, source_tags

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git command to make checkouts")


def git(cwd: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for k in range(2):
        (root / "f.txt").write_text(str(k))
        git(root, "add", "f.txt")
        git(root, "commit", "-q", "-m", f"c{k}")
    return root


def test_the_commit_of_a_branch_is_read_from_loose_then_packed_refs(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == head
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git/refs/heads/main").exists()
    assert git_commit(repo) == head


def test_a_detached_head_and_a_worktree_give_their_own_commit(repo: Path, tmp_path: Path) -> None:
    first = git(repo, "rev-parse", "HEAD~1")
    git(repo, "worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"), first)
    assert (tmp_path / "wt/.git").is_file()
    assert git_commit(tmp_path / "wt") == first
    git(repo, "checkout", "-q", "--detach", "HEAD~1")
    assert git_commit(repo) == first


def test_outside_a_checkout_the_tags_name_the_command_and_no_commit(tmp_path: Path) -> None:
    assert source_tags("python -m sim", tmp_path) == {SOURCE_NAME: "python -m sim", SOURCE_TYPE: "LOCAL"}
    (tmp_path / ".git").write_text("not a gitdir line\n")
    assert git_commit(tmp_path) is None


def test_this_checkout_is_tagged_with_its_head() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("the project is not a git checkout here")
    assert source_tags("python -m sim")[GIT_COMMIT] == git(ROOT, "rev-parse", "HEAD")

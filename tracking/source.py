"""Where a run comes from, as MLflow's own tags say it: the command (`mlflow.source.name`, the
Source column), its kind (`mlflow.source.type`, LOCAL) and, in a git checkout, the commit
(`mlflow.source.git.commit`, the Version column).

The commit is read from the checkout's files (.git/HEAD, the ref it names, packed-refs; a
worktree's .git file points to its folder), without running git: no process, no git needed.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_NAME = "mlflow.source.name"
SOURCE_TYPE = "mlflow.source.type"
GIT_COMMIT = "mlflow.source.git.commit"


def source_tags(command: str, root: Path = ROOT) -> dict[str, str]:
    """MLflow's source tags of a run started by `command` (e.g. "python -m sim") from `root`."""
    tags = {SOURCE_NAME: command, SOURCE_TYPE: "LOCAL"}
    commit = git_commit(root)
    if commit:
        tags[GIT_COMMIT] = commit
    return tags


def git_commit(root: Path = ROOT) -> str | None:
    """HEAD's commit (40 hex digits) of the git checkout at `root`; None when `root` is not one
    (an installed package) or its files cannot be read."""
    try:
        git = _git_dir(root)
        if git is None:
            return None
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return _commit(head)
        common = _common_dir(git)
        ref = head.removeprefix("ref:").strip()
        for folder in dict.fromkeys((git, common)):
            if (folder / ref).is_file():
                return _commit((folder / ref).read_text().strip())
        return _packed(common / "packed-refs", ref)
    except (OSError, UnicodeDecodeError):
        return None


def _git_dir(root: Path) -> Path | None:
    """The checkout's git folder: .git, or where a worktree's .git file points (`gitdir: PATH`)."""
    dot = root / ".git"
    if dot.is_dir():
        return dot
    if not dot.is_file():
        return None
    text = dot.read_text().strip()
    if not text.startswith("gitdir:"):
        return None
    path = Path(text.removeprefix("gitdir:").strip())
    return path if path.is_absolute() else (root / path).resolve()


def _common_dir(git: Path) -> Path:
    """The folder holding the refs a worktree shares with its main checkout (the git folder itself
    for a main checkout)."""
    common = git / "commondir"
    if not common.is_file():
        return git
    path = Path(common.read_text().strip())
    return path if path.is_absolute() else (git / path).resolve()


def _packed(path: Path, ref: str) -> str | None:
    """The commit of `ref` in a packed-refs file, if listed there."""
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        commit, _, name = line.partition(" ")
        if name == ref:
            return _commit(commit)
    return None


def _commit(text: str) -> str | None:
    """`text` if it is a full commit hash, else None."""
    ok = len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)
    return text if ok else None

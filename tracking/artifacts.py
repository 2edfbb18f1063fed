"""A run's files stored once: the run folder is their one copy.

Where a run's MLflow artifact store is a local folder (a SQLite or file store: `./mlruns`), its
artifacts are hard links to the run folder's files, not copies: both show the same bytes, stored
once on disk. Where the artifact store is elsewhere (a tracking server, a bucket) or on another
file system, the files are uploaded or copied, as MLflow does.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def store_artifacts(client: Any, run_id: str, paths: Iterable[Path], artifact_path: str = "") -> None:
    """Add the files and folders `paths` (each under its own name, inside `artifact_path`) to the
    run's artifacts; missing paths are skipped."""
    paths = [p for p in paths if p.exists()]
    target = local_folder(client.get_run(run_id).info.artifact_uri)
    for path in paths:
        if target is not None:
            _put(path, target / artifact_path / path.name)
        elif path.is_dir():
            client.log_artifacts(run_id, str(path), f"{artifact_path}/{path.name}".strip("/"))
        else:
            client.log_artifact(run_id, str(path), artifact_path or None)


def local_folder(artifact_uri: str) -> Path | None:
    """The folder of a local artifact URI (a path, or file:); None for any other store."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    return Path(local_file_uri_to_path(artifact_uri)) if urlparse(artifact_uri).scheme in ("", "file") else None


def _put(source: Path, dest: Path) -> None:
    """`dest` as a hard link to `source` (a file, or each file of a folder), a copy where the file
    system has none; whatever was at `dest` is replaced."""
    if source.is_dir():
        for file in sorted(f for f in source.rglob("*") if f.is_file()):
            _put(file, dest / file.relative_to(source))
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(source, dest)

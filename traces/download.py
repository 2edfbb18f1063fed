"""Download traces that are too large to ship into a cache directory, checked against sha256."""

from __future__ import annotations

import hashlib
import logging
import urllib.error
import urllib.request
from pathlib import Path

import platformdirs

from sim.console.progress import progress_bar
from traces.sources import Source

log = logging.getLogger("traces")
_CHUNK = 1 << 20


class DownloadError(ConnectionError):
    """A trace could not be downloaded; the message says where to put the file by hand."""


def default_cache_dir() -> Path:
    """Platform cache directory for downloaded traces and their Parquet caches."""
    return Path(platformdirs.user_cache_dir("sweetspot-sim")) / "traces"


def resolve_cache_dir(cache_dir: str | Path | None) -> Path:
    """`cache_dir` if given, else the platform default."""
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_local(source: Source, cache_dir: Path, allow_download: bool = True, progress: bool = True) -> Path:
    """Path of `source` in `cache_dir`, downloading it first if absent; checksum checked once."""
    dest = cache_dir / source.filename
    if not dest.exists():
        if not allow_download:
            raise FileNotFoundError(_by_hand(source, dest, "downloads are switched off"))
        download(source, dest, progress=progress)
    _verify_once(source, dest)
    return dest


def download(source: Source, dest: Path, progress: bool = True) -> Path:
    """Fetch `source` to `dest`, trying its URLs in order; raise DownloadError if all fail."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    reasons = []
    for url in source.urls:
        try:
            digest = _fetch(url, dest.with_name(dest.name + ".part"), progress)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reasons.append(f"{url}: {e}")
            continue
        _check_digest(source, digest, url, dest.with_name(dest.name + ".part"))
        dest.with_name(dest.name + ".part").replace(dest)
        _write_marker(dest, digest)
        log.info("traces: downloaded %s (sha256 %s)", dest, digest)
        return dest
    raise DownloadError(_by_hand(source, dest, "; ".join(reasons) or "no URL known"))


def _fetch(url: str, part: Path, progress: bool) -> str:
    """Stream `url` into `part` with a progress bar; return the sha256 of what was written."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
        total = response.headers.get("Content-Length")
        with progress_bar(
            progress, total=int(total) if total else None, unit="B", unit_scale=True, desc=part.name[: -len(".part")]
        ) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _check_digest(source: Source, digest: str, origin: str, path: Path) -> None:
    if source.sha256 is not None and digest != source.sha256:
        path.unlink(missing_ok=True)
        raise ValueError(
            f"{origin}: sha256 {digest} does not match the published "
            f"{source.sha256} for {source.filename}; the file was removed"
        )


def _verify_once(source: Source, dest: Path) -> None:
    """Check a file put in the cache by hand; a `.sha256` marker records a passed check."""
    marker = dest.with_name(dest.name + ".sha256")
    if marker.exists() and marker.stat().st_mtime >= dest.stat().st_mtime:
        return
    digest = sha256_of(dest)
    if source.sha256 is not None and digest != source.sha256:
        raise ValueError(
            f"{dest}: sha256 {digest} does not match the published {source.sha256}; "
            f"delete it and download {source.filename} again"
        )
    if source.sha256 is None:
        log.warning(
            "traces: no sha256 is published for %s; its sha256 is %s (row count is checked after parsing)", dest, digest
        )
    _write_marker(dest, digest)


def _write_marker(dest: Path, digest: str) -> None:
    dest.with_name(dest.name + ".sha256").write_text(f"{digest}  {dest.name}\n")


def _by_hand(source: Source, dest: Path, reason: str) -> str:
    urls = " or ".join(source.urls) or "its publisher"
    check = f" (sha256 {source.sha256})" if source.sha256 else ""
    return (
        f"trace file {source.filename} is not in the cache ({reason}). Download it from "
        f"{urls} and put it at {dest}{check}, or pass cache_dir= to point at a folder that "
        f"holds it."
    )

"""Command line: `python -m traces download NAME` and `python -m traces stats NAME_OR_PATH`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from traces.config import GENERATED, NAMED_TRACES
from traces.download import DownloadError, ensure_local, resolve_cache_dir
from traces.loader import load
from traces.sources import shipped_path, source_for
from traces.stats import format_stats, trace_stats


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m traces", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    down = sub.add_parser("download", help="download a trace into the cache")
    down.add_argument("name", choices=[n for n in NAMED_TRACES if n not in GENERATED])
    stats = sub.add_parser("stats", help="lengths, count, span and rates of a trace")
    stats.add_argument("name", help=f"one of {NAMED_TRACES} or a CSV/JSONL/Parquet path")
    stats.add_argument("--model", default=None, help="BurstGPT model filter (ChatGPT, GPT-4)")
    stats.add_argument("--keep-failed", action="store_true", help="keep 0-output requests")
    for p in (down, stats):
        p.add_argument("--file", type=int, default=1, choices=(1, 2), help="BurstGPT file")
        p.add_argument("--cache-dir", default=None, help="cache folder (default: platform's)")
    return parser


def _download(args: argparse.Namespace) -> str:
    source = source_for(args.name, args.file)
    if source.shipped is not None:
        return f"{args.name} is shipped with the package: {shipped_path(source)}"
    return str(ensure_local(source, resolve_cache_dir(args.cache_dir)))


def _stats(args: argparse.Namespace) -> str:
    options = {"cache_dir": args.cache_dir, "model": args.model}
    if args.name == "burstgpt":
        options.update(file=args.file, keep_failed=args.keep_failed)
    frame = load(args.name, **options)
    return f"{frame.attrs['load_summary']}\n{format_stats(args.name, trace_stats(frame))}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; errors print one line to stderr and return 1."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    args = _parser().parse_args(argv)
    try:
        print(_download(args) if args.command == "download" else _stats(args))
    except (DownloadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

"""Command line: `python -m traces download NAME` and `python -m traces stats NAME_OR_PATH [KEY=VALUE ...]`."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from traces.config import GENERATED, NAMED_TRACES, TraceConfig
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
    stats.add_argument(
        "options", nargs="*", metavar="KEY=VALUE", help="TraceConfig options, e.g. turns=4 shared_prefix_tokens=1000"
    )
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
    options: dict[str, Any] = {"cache_dir": args.cache_dir, "model": args.model}
    if args.name == "burstgpt":
        options.update(file=args.file, keep_failed=args.keep_failed)
    frame = load(args.name, **{**options, **_key_values(args.options)})
    return f"{frame.attrs['load_summary']}\n{format_stats(args.name, trace_stats(frame))}"


def _key_values(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` options (values read as YAML: 4, 0.5, null, gamma) of TraceConfig fields."""
    known = {f.name for f in dataclasses.fields(TraceConfig)} - {"name", "path"}
    options: dict[str, Any] = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or key not in known:
            raise ValueError(f"trace option {item!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
        options[key] = yaml.safe_load(value)
    return options


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; errors print one line to stderr and return 1."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # KEY=VALUE after a --flag come back as extra
    if args.command != "stats" or any(a.startswith("-") or "=" not in a for a in extra):
        args = parser.parse_args(argv)  # the usual error for what is not an option
    else:
        args.options = [*args.options, *extra]
    try:
        print(_download(args) if args.command == "download" else _stats(args))
    except (DownloadError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0

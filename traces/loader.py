"""`load` and `load_config`: resolve a trace, parse it (Parquet-cached), clean, apply options."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from traces import clean, synthetic
from traces.config import GENERATED, NAMED_TRACES, TraceConfig
from traces.download import ensure_local, resolve_cache_dir
from traces.options import apply_options
from traces.parse import Parsed, parse_file
from traces.sources import Source, shipped_path, source_for
from traces.stats import block_reuse

log = logging.getLogger("traces")
_CACHE_KEY = b"sweetspot_traces_cache"
_CACHE_VERSION = "1"


def load(name_or_path: str | Path, **options: Any) -> pd.DataFrame:
    """Load a named trace or a CSV/JSONL/Parquet file; `options` are TraceConfig fields.

    Returns `arrival_s` (float64 s from the first request, sorted), `n_in`, `n_out` (int32
    tokens >= 1) and the source's extras (`model`, `log_type`; `hash_ids`, lists of prompt block
    hashes, from JSON lines; synthetic conversations add `conversation`, `turn` and `hash_ids`, their
    block size in `df.attrs["hash_block_tokens"]`). `df.attrs["load_summary"]` is the
    one-line report of what was dropped or fixed (also logged on logger `traces`). A closed loop
    (`closed_loop`) has `think_s` too, and `df.attrs["clients"]`, its concurrency: the simulator
    replays it with that many clients, its `arrival_s` (0.0) set as the clients send.
    """
    if isinstance(name_or_path, str) and name_or_path in NAMED_TRACES:
        return load_config(TraceConfig(name=name_or_path, **options))
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{name_or_path!r} is neither a trace name {NAMED_TRACES} nor an existing file")
    return load_config(TraceConfig(name="file", path=str(path), **options))


def load_config(cfg: TraceConfig | Mapping[str, Any]) -> pd.DataFrame:
    """Load the trace a TraceConfig (or a plain mapping of its fields) describes."""
    if not isinstance(cfg, TraceConfig):
        cfg = TraceConfig.from_mapping(cfg)
    rng = np.random.default_rng(cfg.seed)
    frame, label, notes, attrs = _base(cfg, rng)
    n_read = attrs.pop("rows_read", len(frame))
    frame, option_notes = apply_options(frame, cfg, rng)
    notes = notes + option_notes
    gap = clean.idle_gap_warning(frame)
    if gap is not None:
        log.warning("traces: %s: %s", cfg.path or cfg.name, gap)
        notes = [*notes, gap]
    span = "" if cfg.name == "closed_loop" else f" over {float(frame['arrival_s'].iat[-1]):,.1f} s"
    reuse = block_reuse(frame)
    summary = (
        f"{label}: {n_read:,} rows read; {'; '.join(notes) or 'nothing dropped or fixed'}"
        f"; {len(frame):,} requests{span}{'' if reuse is None else '; ' + reuse.describe()}"
    )
    log.info("traces: %s", summary)
    frame.attrs.update(attrs, load_summary=summary, name=cfg.name)
    return frame


def _base(cfg: TraceConfig, rng: np.random.Generator):
    """The whole trace, cleaned and 0-based, before options: (frame, label, notes, attrs)."""
    if cfg.name in GENERATED:
        fit = None
        if cfg.lengths_from is not None and (cfg.n_in is None or cfg.n_out is None):
            base = load_config(TraceConfig(name=cfg.lengths_from, cache_dir=cfg.cache_dir, download=cfg.download))
            fit = synthetic.LengthFit.fit(base)
        if cfg.name == "closed_loop":
            label = f"closed loop ({cfg.concurrency} clients, think {cfg.think} {cfg.think_s:g} s)"
            return synthetic.closed_loop(cfg, rng, fit), label, [], {"clients": cfg.concurrency}
        frame = synthetic.generate(cfg, rng, fit)
        label = f"synthetic ({cfg.arrival}, {cfg.rate_per_s:g}/s)"
        if "hash_ids" not in frame.columns:
            return frame, label, [], {}
        prefix = [f"conversations of {cfg.turns:g} turns on average, {cfg.open_conversations} open"] * (cfg.turns > 1)
        prefix += [f"{cfg.shared_prefix_tokens:,}-token shared prefix"] * (cfg.shared_prefix_tokens > 0)
        label = f"synthetic ({cfg.arrival}, {cfg.rate_per_s:g}/s; {', '.join(prefix)})"
        return frame, label, [], {"hash_block_tokens": cfg.hash_block_tokens}
    if cfg.name == "file":
        assert cfg.path is not None
        parsed = parse_file(Path(cfg.path).expanduser())
        return _cleaned(parsed, cfg, label=f"{cfg.path} ({parsed.fmt} format)")
    source = source_for(cfg.name, cfg.file)
    parsed = _check_rows(source, _parse_source(source, cfg))
    return _cleaned(parsed, cfg, label=f"{cfg.name} ({source.filename})")


def _cleaned(parsed: Parsed, cfg: TraceConfig, label: str):
    frame, dropped = clean.drop_zero_tokens(parsed.frame, keep_zero_out=cfg.keep_failed)
    frame, fixed = clean.sort_and_rebase(frame)
    attrs = {"format": parsed.fmt, "t0": parsed.t0, "rows_read": len(parsed.frame)}
    return frame, label, list(parsed.notes) + dropped + fixed, attrs


def _parse_source(source: Source, cfg: TraceConfig) -> Parsed:
    if source.shipped is not None:
        return parse_file(shipped_path(source))
    cache_dir = resolve_cache_dir(cfg.cache_dir)
    cached = cache_dir / (Path(source.filename).stem + ".parquet")
    csv = cache_dir / source.filename
    if cached.exists() and (not csv.exists() or cached.stat().st_mtime >= csv.stat().st_mtime):
        parsed = read_cache(cached)
        if parsed is not None:
            return parsed
    parsed = parse_file(ensure_local(source, cache_dir, allow_download=cfg.download))
    write_cache(parsed, cached)
    return parsed


def _check_rows(source: Source, parsed: Parsed) -> Parsed:
    """Warn (and note) when a file's row count differs from the published one."""
    if source.rows is None or len(parsed.frame) == source.rows:
        return parsed
    note = f"row count {len(parsed.frame):,} differs from the published {source.rows:,}"
    log.warning("traces: %s: %s", source.filename, note)
    return replace(parsed, notes=parsed.notes + (note,))


def write_cache(parsed: Parsed, path: Path) -> None:
    """Store a parsed trace as Parquet, its notes and t0 in the schema metadata."""
    table = pa.Table.from_pandas(parsed.frame, preserve_index=False)
    meta = json.dumps({"version": _CACHE_VERSION, "fmt": parsed.fmt, "notes": parsed.notes, "t0": parsed.t0})
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _CACHE_KEY: meta})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_cache(path: Path) -> Parsed | None:
    """A trace written by `write_cache`, or None if the file is from another cache version."""
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(_CACHE_KEY, b"{}"))
    if meta.get("version") != _CACHE_VERSION:
        return None
    frame = table.to_pandas(ignore_metadata=True, types_mapper=_list_columns)
    return Parsed(frame, meta["fmt"], tuple(meta["notes"]), meta["t0"])


def _list_columns(typ: pa.DataType) -> pd.ArrowDtype | None:
    """List columns (`hash_ids`) come back as they went in, Arrow lists; the rest as pandas maps them."""
    return pd.ArrowDtype(typ) if pa.types.is_list(typ) else None

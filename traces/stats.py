"""Summary statistics of a trace, in the layout of Tables 1-2 of Fernandez et al. (2025)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from traces.jsonl import BLOCK_TOKENS, block_tokens


@dataclass(frozen=True)
class LengthStats:
    """Token-length statistics (tokens); `std` is the sample standard deviation (ddof=1)."""

    mean: float
    std: float
    median: float
    p99: float
    max: int


@dataclass(frozen=True)
class BlockReuse:
    """Prompt prefix blocks (`hash_ids`) of a trace: how many, and the share that repeat an earlier one.

    A repeated block is one an infinite prefix cache would hold already when its request arrives,
    so `repeated_share` is that cache's hit rate in blocks (0..1).
    """

    blocks: int
    repeated: int

    @property
    def repeated_share(self) -> float:
        return self.repeated / self.blocks if self.blocks else 0.0

    def describe(self) -> str:
        """One phrase, e.g. "36.6 % of 286,000 prompt blocks repeat an earlier block"."""
        return f"{100 * self.repeated_share:.1f} % of {self.blocks:,} prompt blocks repeat an earlier block"


@dataclass(frozen=True)
class TraceStats:
    """Request count, time span (s), mean and peak-minute arrival rates (requests/s), lengths,
    and the prompt blocks' reuse when the trace has `hash_ids` (else None), blocks of
    `block_tokens` tokens (the frame's `attrs["hash_block_tokens"]`, else the Mooncake traces' 512)."""

    requests: int
    span_s: float
    mean_rate_per_s: float
    peak_minute_rate_per_s: float
    n_in: LengthStats
    n_out: LengthStats
    blocks: BlockReuse | None = None
    block_tokens: int = BLOCK_TOKENS


def length_stats(values: np.ndarray) -> LengthStats:
    """Mean ± std, median, p99 (linear interpolation) and max of a length column."""
    x = np.asarray(values, dtype=np.float64)
    std = float(x.std(ddof=1)) if len(x) > 1 else 0.0
    return LengthStats(float(x.mean()), std, float(np.median(x)), float(np.percentile(x, 99)), int(x.max()))


def block_reuse(frame: pd.DataFrame) -> BlockReuse | None:
    """Reuse of the prompt blocks in `hash_ids` (None without that column).

    Every occurrence of a block id after its first is a repeat, so the count does not depend on
    the order of the requests: blocks − distinct ids.
    """
    if "hash_ids" not in frame.columns:
        return None
    ids = pa.chunked_array(frame["hash_ids"]).combine_chunks().flatten().to_numpy()
    return BlockReuse(int(ids.size), int(ids.size - np.unique(ids).size))


def trace_stats(frame: pd.DataFrame) -> TraceStats:
    """Statistics of a loaded trace; mean rate is requests / span, peak over 60-s bins."""
    t = frame["arrival_s"].to_numpy()
    span = float(t[-1] - t[0])
    per_minute = np.bincount(((t - t[0]) // 60.0).astype(np.int64))
    return TraceStats(
        len(frame),
        span,
        len(frame) / span if span > 0 else float("nan"),
        float(per_minute.max()) / 60.0,
        length_stats(frame["n_in"].to_numpy()),
        length_stats(frame["n_out"].to_numpy()),
        block_reuse(frame),
        block_tokens(frame),
    )


def format_stats(name: str, s: TraceStats) -> str:
    """A small text table of `s`."""
    rows = [
        f"{name}: {s.requests:,} requests over {s.span_s:,.0f} s "
        f"({s.span_s / 3600:.2f} h); mean {s.mean_rate_per_s:.2f} req/s, "
        f"peak minute {s.peak_minute_rate_per_s:.2f} req/s",
        f"{'tokens':<8}{'mean ± std':>22}{'median':>10}{'p99':>10}{'max':>10}",
    ]
    for label, ls in (("input", s.n_in), ("output", s.n_out)):
        rows.append(f"{label:<8}{f'{ls.mean:.2f} ± {ls.std:.2f}':>22}{ls.median:>10.0f}{ls.p99:>10.0f}{ls.max:>10,}")
    if s.blocks is not None:
        rows.append(f"prefix blocks ({s.block_tokens} tokens): {s.blocks.describe()}")
    return "\n".join(rows)

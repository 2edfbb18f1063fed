"""Prompt prefix blocks of a job table, for the engine's prefix cache.

A trace with `hash_ids` (the Mooncake schema, `traces.jsonl`) names each prompt's blocks of
`block_tokens` tokens by hash; two prompts whose lists start with the same k hashes share their
first k blocks. `PrefixBlocks` keeps them per job as compact arrays the compiled kernel reads:
the hashes mapped to dense ids 0…`unique`−1 (a replica's cache is an array over them), job j's
listed at `ids[starts[j]:starts[j] + lengths[j]]`, of which the first `counts[j]` are
cacheable: only full blocks are cached (as vLLM does), and only those of the prompt the job is
served with (a policy that changes the front of a prompt keeps none: `keep`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from traces.jsonl import BLOCK_TOKENS


@dataclass
class PrefixBlocks:
    """Jobs' prompt blocks: dense block ids `ids` (int32), job j's listed from `starts[j]`
    (int64), `lengths[j]` of them (int32), the first `counts[j]` cacheable (int32: full blocks of
    the prompt it is served with); `block_tokens` tokens a block, `unique` distinct blocks."""

    starts: np.ndarray
    lengths: np.ndarray
    counts: np.ndarray
    ids: np.ndarray
    block_tokens: int
    unique: int
    refs: np.ndarray | None = None  # blocks each job references in a replica's cache (the kernel's)

    @classmethod
    def from_lists(
        cls, hash_ids: pd.Series, n_in: np.ndarray, kept: np.ndarray | None = None, block_tokens: int = BLOCK_TOKENS
    ) -> PrefixBlocks:
        """The full blocks of each request's prompt (`hash_ids`, a list of int64 hashes per
        request; `n_in` its served prompt, tokens) within its first `kept` tokens (the prompt's
        leading tokens a policy left as they were; default all of `n_in`)."""
        lists = _as_list_array(hash_ids)
        lengths = lists.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        n_in = np.asarray(n_in, dtype=np.int64)
        if lengths.size != n_in.size:
            raise ValueError(f"hash_ids has {lengths.size:,} rows, the requests {n_in.size:,}")
        hashes = lists.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        unique, dense = np.unique(hashes, return_inverse=True)
        if unique.size >= np.iinfo(np.int32).max:
            raise ValueError(f"{unique.size:,} distinct prefix blocks: more than the cache's int32 ids hold")
        starts = np.zeros(lengths.size, dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        keep = n_in if kept is None else np.minimum(np.asarray(kept, dtype=np.int64), n_in)
        counts = np.minimum(lengths, keep // block_tokens).astype(np.int32)
        ids = dense.astype(np.int32).reshape(-1)
        return cls(starts, lengths.astype(np.int32), counts, ids, int(block_tokens), int(unique.size))

    def extended(self, parents: np.ndarray, n_in: np.ndarray) -> PrefixBlocks:
        """These blocks followed by those of the jobs `parents` again, for prompts of `n_in`
        tokens that start as theirs did (summarization requests read the original prompts)."""
        parents = np.asarray(parents, dtype=np.int64)
        lengths = self.lengths[parents]
        counts = np.minimum(lengths, np.asarray(n_in, dtype=np.int64) // self.block_tokens).astype(np.int32)
        return PrefixBlocks(
            np.concatenate([self.starts, self.starts[parents]]),
            np.concatenate([self.lengths, lengths]),
            np.concatenate([self.counts, counts]),
            self.ids,
            self.block_tokens,
            self.unique,
        )

    def keep(self, job: int, tokens: int) -> None:
        """Job `job`'s served prompt keeps only its first `tokens` tokens of the original."""
        self.counts[job] = min(int(self.counts[job]), max(int(tokens), 0) // self.block_tokens)

    @property
    def blocks(self) -> int:
        """Cacheable blocks over all jobs."""
        return int(self.counts.sum())


def _as_list_array(hash_ids: pd.Series) -> pa.Array:
    """The column as one Arrow list array of int64 (it is stored as one,
    `traces.jsonl.HASH_IDS_DTYPE`); anything but lists of integers (or empty rows) is refused."""
    why = "hash_ids must hold one list of integer block hashes per request"
    try:
        if isinstance(hash_ids.dtype, pd.ArrowDtype):
            values = pa.chunked_array(hash_ids).combine_chunks()
        else:
            values = pa.array(list(hash_ids))
    except pa.ArrowException as error:
        raise ValueError(f"{why}: {error}") from None
    kind = values.type
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)) or not (
        pa.types.is_integer(kind.value_type) or pa.types.is_null(kind.value_type)
    ):
        raise ValueError(f"{why}, got a column of {kind}")
    return values.cast(pa.list_(pa.int64()))

"""The job table: inputs and outcomes of every job a simulation serves, as flat arrays.

A job is one request served by one server: a user's (possibly reshaped) request, or the
summarization request a policy added in front of it. Servers read the lengths and write the
times; nothing here knows about SimPy. Lengths are `array('i')` (4 bytes a job, and scalar reads
as fast as a list's in the engine's loop); outcomes are numpy arrays; what only preempted jobs (or
the exact-steps reference) need is kept per job that has it (`Counts`). About 52 bytes a job.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from sim.engine.prefix import PrefixBlocks

PENDING, DONE, REJECTED = 0, 1, 2
Prefill = list[tuple[int, int, int]]  # a step's prompt work: (job, chunk tokens, tokens already prefilled)
# Why a job was rejected (JobTable.reason): codes and the words records and summaries use.
REJECT_NONE, REJECT_KV, REJECT_TOKEN_BUDGET, REJECT_SUMMARY = 0, 1, 2, 3
REJECT_REASONS = {
    REJECT_NONE: "",
    REJECT_KV: "longer than the KV cache holds",
    REJECT_TOKEN_BUDGET: (
        "prompt (or its recomputation after a preemption) over server.max_num_tokens without chunked prefill"
    ),
    REJECT_SUMMARY: "its summarization request was rejected",
}


@dataclass(frozen=True)
class ServerState:
    """What a policy or a router may see of a server when a request arrives (requests, tokens, s).

    decoders and decode_ctx: sequences decoding and the sum of their contexts (tokens);
    outstanding_tokens: work left (`SimpleEngine.outstanding_tokens`); queued_kv_tokens and
    queued_prompt_tokens: Σ n_in + n_out and Σ n_in of the queued requests; last_finish_steps:
    steps until the last decoder finishes (0: none decoding); recent_step_s: moving average of its
    step time (s), prefills included; state_kv_tokens: the KV tokens' worth of cache each request's
    state takes besides (a hybrid's Mamba state; `KvLayout.state_tokens`).
    """

    queue_len: int
    running: int
    kv_free_tokens: int
    decoders: int = 0
    decode_ctx: int = 0
    outstanding_tokens: int = 0
    queued_kv_tokens: int = 0
    queued_prompt_tokens: int = 0
    last_finish_steps: int = 0
    recent_step_s: float = 0.0
    state_kv_tokens: int = 0


class Counts(dict[int, float]):
    """Per-job counters that are 0 for most jobs, kept only for the jobs that have one."""

    def __missing__(self, job: int) -> float:
        return 0

    def dense(self, ids: np.ndarray, dtype: type = float) -> np.ndarray:
        """The counters of jobs `ids` as an array (0 where absent)."""
        out: np.ndarray = np.zeros(ids.size, dtype=dtype)
        if self:
            keys = np.fromiter(self.keys(), dtype=np.int64, count=len(self))
            values = np.fromiter(self.values(), dtype=float, count=len(self))
            order = np.argsort(keys)
            keys, values = keys[order], values[order]
            at = np.clip(np.searchsorted(keys, ids), 0, keys.size - 1)
            hit = keys[at] == ids
            out[hit] = values[at[hit]]
        return out


INT32_MAX = 2**31 - 1


class JobTable:
    """Lengths (tokens) in, times (s) and charges out, indexed by job id 0…n−1."""

    def __init__(self, n_in: ArrayLike, n_out: ArrayLike) -> None:
        n_in_a = np.asarray(n_in, dtype=np.int64)
        n_out_a = np.asarray(n_out, dtype=np.int64)
        if n_in_a.shape != n_out_a.shape or n_in_a.ndim != 1:
            raise ValueError("n_in and n_out must be 1-d arrays of the same length")
        if n_in_a.size and (n_in_a.min() < 1 or n_out_a.min() < 1):
            raise ValueError("every job needs n_in >= 1 and n_out >= 1 tokens")
        if n_in_a.size and max(n_in_a.max(), n_out_a.max()) > INT32_MAX:
            raise ValueError(f"n_in and n_out must be at most {INT32_MAX:,} tokens")
        n = n_in_a.size
        self.n_in = array("i", n_in_a.astype(np.int32).tobytes())
        self.n_out = array("i", n_out_a.astype(np.int32).tobytes())
        self.generated = array("i", bytes(4 * n))  # output tokens emitted so far (updated at stint ends)
        self.admit_s = np.full(n, np.nan)  # start of its first prefill step
        self.first_s = np.full(n, np.nan)  # end of the step that emitted its first token
        self.finish_s = np.full(n, np.nan)  # end of the step that emitted its last token
        self.share = np.zeros(n)  # Σ 1/(sequences in step) over its steps
        self.chunks = np.zeros(n, dtype=np.int32)  # prefill steps it took
        self.server = np.full(n, -1, dtype=np.int16)  # index of the server that took it
        self.status = np.full(n, PENDING, dtype=np.int8)
        self.reason = np.zeros(n, dtype=np.int8)  # REJECT_* code of a rejected job
        self.energy_j = Counts()  # J, accumulated step by step (exact-steps mode only)
        self.preemptions = Counts()  # times preempted (recomputed on resume)
        self.extra_prefill_tokens = Counts()  # prefilled again or thrown away
        self.extra_prefill_pairs = Counts()  # their causal attention pairs
        self.recomputed_steps = Counts()  # decode steps a re-prefill replaced
        self.recomputed_ctx = Counts()  # Σ the contexts of those decode steps
        self.kernel_links: tuple[np.ndarray, ...] | None = None  # the compiled kernel's (`sim.kernel.engine.job_links`)
        self.prefix: PrefixBlocks | None = None  # prompt prefix blocks, for the prefix cache (`sim.engine.prefix`)
        self.cached_tokens = np.zeros(n, dtype=np.int64)  # prompt tokens its prefills found in the prefix cache
        self.cached_pairs = np.zeros(n)  # their causal attention pairs (Σ h(h+1)/2 over its prefills)

    def __len__(self) -> int:
        return len(self.n_in)

    def lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_in, n_out) as int64 arrays, as served."""
        return self.lengths_of(slice(None))

    def lengths_of(self, ids: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n_in, n_out) of jobs `ids` as int64 arrays, as served."""
        n_in = np.frombuffer(self.n_in, dtype=np.int32)[ids].astype(np.int64)
        return n_in, np.frombuffer(self.n_out, dtype=np.int32)[ids].astype(np.int64)

"""Seeded synthetic traces: Poisson or Gamma arrivals (or a closed loop's clients), fixed or fitted
log-normal lengths, and optionally multi-turn conversations and a shared system prompt with the
prompts' prefix-block hashes (`hash_ids`, as the Mooncake traces have them: `traces.jsonl`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from traces.config import TraceConfig
from traces.jsonl import HASH_IDS_DTYPE


@dataclass(frozen=True)
class LengthFit:
    """Bivariate log-normal fit of (n_in, n_out) in tokens.

    `mu_log` and `cov_log` are the mean and covariance of (ln n_in, ln n_out); draws are rounded
    and clipped to [1, max seen in the fitted trace].
    """

    mu_log: tuple[float, float]
    cov_log: tuple[tuple[float, float], tuple[float, float]]
    max_in: int
    max_out: int

    @classmethod
    def fit(cls, frame: pd.DataFrame) -> LengthFit:
        """Fit to a trace's `n_in`, `n_out` columns (all must be >= 1)."""
        logs = np.log(frame[["n_in", "n_out"]].to_numpy(dtype=np.float64))
        mu = logs.mean(axis=0)
        cov = np.cov(logs, rowvar=False)
        return cls(
            (float(mu[0]), float(mu[1])),
            ((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
            int(frame["n_in"].max()),
            int(frame["n_out"].max()),
        )

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw `n` (n_in, n_out) pairs as int32 arrays."""
        logs = rng.multivariate_normal(self.mu_log, self.cov_log, size=n)
        tokens = np.rint(np.exp(logs))
        n_in = np.clip(tokens[:, 0], 1, self.max_in).astype(np.int32)
        n_out = np.clip(tokens[:, 1], 1, self.max_out).astype(np.int32)
        return n_in, n_out


def arrivals(n: int, rate_per_s: float, arrival: str, cv: float, rng: np.random.Generator) -> np.ndarray:
    """`n` arrival times (s) starting at 0.0 with mean rate `rate_per_s`.

    Poisson: exponential inter-arrivals. Gamma: shape 1/cv**2, so the inter-arrival
    coefficient of variation is `cv` (cv > 1 is burstier than Poisson).
    """
    if arrival == "poisson":
        gaps = rng.exponential(1.0 / rate_per_s, size=n - 1)
    elif arrival == "gamma":
        shape = 1.0 / cv**2
        gaps = rng.gamma(shape, 1.0 / (rate_per_s * shape), size=n - 1)
    else:
        raise ValueError(f"trace config: arrival={arrival!r} is invalid, expected poisson|gamma")
    return np.concatenate(([0.0], np.cumsum(gaps)))


def generate(cfg: TraceConfig, rng: np.random.Generator, fit: LengthFit | None = None) -> pd.DataFrame:
    """A synthetic trace for `cfg`; `fit` is required unless both n_in and n_out are fixed.

    With `cfg.turns` > 1 or a shared prefix, the drawn `n_in` are the new messages of
    conversations' turns (`with_prefixes`); the arrivals and lengths drawn are the same as without.
    """
    t = arrivals(cfg.num_requests, cfg.rate_per_s, cfg.arrival, cfg.cv, rng)
    n_in, n_out = lengths(cfg, rng, fit)
    frame = pd.DataFrame({"arrival_s": t, "n_in": n_in, "n_out": n_out})
    if cfg.turns == 1 and cfg.shared_prefix_tokens == 0:
        return frame
    return with_prefixes(frame, cfg, rng)


def with_prefixes(frame: pd.DataFrame, cfg: TraceConfig, rng: np.random.Generator) -> pd.DataFrame:
    """`frame` (its `n_in` the new message of each request) as conversations of `cfg.turns` turns
    on average behind a system prompt of `cfg.shared_prefix_tokens` tokens: `n_in` the whole
    prompt, plus `conversation`, `turn` and `hash_ids` columns (blocks of `cfg.hash_block_tokens`)."""
    conv, turn = conversations(len(frame), cfg.turns, cfg.open_conversations, rng)
    message = frame["n_in"].to_numpy()
    prompt = prompts(conv, message, frame["n_out"].to_numpy(), cfg.shared_prefix_tokens)
    if prompt.max() > np.iinfo(np.int32).max:
        raise ValueError(
            f"trace config: turns={cfg.turns!r} grows a conversation's prompt to {int(prompt.max()):,} tokens, "
            "more than int32 token counts hold"
        )
    hashes = prefix_hashes(conv, prompt, cfg.shared_prefix_tokens, cfg.hash_block_tokens)
    return frame.assign(n_in=prompt.astype(np.int32), conversation=conv, turn=turn, hash_ids=hashes)


def conversations(
    n: int, turns: float, open_conversations: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The conversation (int64, numbered by first arrival) and turn (int32, from 1) of `n` arrivals.

    `open_conversations` conversations are open at a time, each with a number of turns drawn from
    a geometric distribution of mean `turns`; each arrival is the next turn of one picked at
    random, and a conversation that has had all its turns is replaced by a new one. So a
    conversation's turns arrive in order, about `open_conversations` arrivals apart; those still
    open when the trace ends are cut short. `turns` = 1 draws nothing: one turn each.
    """
    if turns == 1:
        return np.arange(n, dtype=np.int64), np.ones(n, dtype=np.int32)
    picks = rng.integers(open_conversations, size=n)
    planned = rng.geometric(1.0 / turns, size=n + open_conversations)  # turns of each conversation opened
    slot_conv = np.arange(open_conversations, dtype=np.int64)  # the conversation open in each slot
    slot_turn = np.zeros(open_conversations, dtype=np.int64)  # turns it has had
    opened = open_conversations
    conv = np.empty(n, dtype=np.int64)
    turn = np.empty(n, dtype=np.int32)
    for i, slot in enumerate(picks.tolist()):
        c = int(slot_conv[slot])
        k = int(slot_turn[slot]) + 1
        conv[i], turn[i] = c, k
        if k == planned[c]:
            slot_conv[slot], slot_turn[slot] = opened, 0
            opened += 1
        else:
            slot_turn[slot] = k
    _, first, dense = np.unique(conv, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[dense.reshape(-1)], turn


def prompts(conv: np.ndarray, message: np.ndarray, n_out: np.ndarray, shared: int) -> np.ndarray:
    """Prompt tokens (int64) of requests in arrival order: `shared` system-prompt tokens, then each
    earlier turn of its conversation (`conv`) as its message and its output, then its `message`."""
    order = np.argsort(conv, kind="stable")  # conversation by conversation, turns in order
    turn_tokens = message[order].astype(np.int64) + n_out[order]
    total = np.cumsum(turn_tokens)
    starts = np.flatnonzero(np.r_[True, conv[order][1:] != conv[order][:-1]])
    before = total - turn_tokens  # tokens of the turns before, since the first conversation's start
    before -= np.repeat(before[starts], np.diff(np.r_[starts, conv.size]))
    prompt = np.empty(conv.size, dtype=np.int64)
    prompt[order] = shared + before + message[order]
    return prompt


def prefix_hashes(conv: np.ndarray, prompt: np.ndarray, shared: int, block: int) -> pd.Series:
    """Each prompt's block ids (HASH_IDS_DTYPE), ceil(prompt / block) of them.

    A full block's id stands for the content up to its end: the system prompt's blocks
    (0…shared // block − 1) are every prompt's, a later full block is its conversation's (the same
    in every turn that has it), and the last, partial block of a prompt is its own. Ids count up
    from 0: system blocks, then each conversation's in order, then the partial blocks.
    """
    full = prompt // block
    counts = -(-prompt // block)
    system = shared // block
    if counts.sum() > np.iinfo(np.int32).max:
        raise ValueError(
            f"{int(counts.sum()):,} prompt blocks: more than a hash_ids column holds; raise hash_block_tokens"
        )
    per_conv = np.zeros(int(conv.max()) + 1, dtype=np.int64)
    np.maximum.at(per_conv, conv, np.maximum(full - system, 0))
    conv_base = system + np.cumsum(per_conv) - per_conv  # id of each conversation's first own block
    partial = counts > full
    partial_ids = system + per_conv.sum() + np.cumsum(partial) - 1
    row = np.repeat(np.arange(conv.size), counts)
    index = np.arange(row.size) - np.repeat(np.cumsum(counts) - counts, counts)  # block index in its prompt
    ids = np.where(index < system, index, conv_base[conv[row]] + index - system)
    last = index == full[row]  # a partial block (a full prompt has no block at index full)
    ids[last] = partial_ids[row[last]]
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids, type=pa.int64()))
    return pd.Series(pd.arrays.ArrowExtensionArray(lists), dtype=HASH_IDS_DTYPE)


def closed_loop(cfg: TraceConfig, rng: np.random.Generator, fit: LengthFit | None = None) -> pd.DataFrame:
    """The requests of a closed loop, in the order the clients send them: lengths drawn as
    `generate` draws them, then `think_s`, the time (s) its client waits after it finishes before
    sending its next request (`cfg.think_s`, or exponential draws of that mean). `arrival_s` is
    0.0 here: the simulation sets each request's when its client sends it (`sim.serving.clients`)."""
    n = cfg.num_requests
    n_in, n_out = lengths(cfg, rng, fit)
    think = rng.exponential(cfg.think_s, size=n) if cfg.think == "exponential" else np.full(n, cfg.think_s)
    return pd.DataFrame({"arrival_s": np.zeros(n), "n_in": n_in, "n_out": n_out, "think_s": think})


def lengths(cfg: TraceConfig, rng: np.random.Generator, fit: LengthFit | None) -> tuple[np.ndarray, np.ndarray]:
    """`cfg.num_requests` (n_in, n_out) pairs (int32 tokens): `cfg.n_in`/`cfg.n_out` where fixed,
    else drawn from `fit` (required unless both are fixed)."""
    n = cfg.num_requests
    if cfg.n_in is not None and cfg.n_out is not None:
        return np.full(n, cfg.n_in, np.int32), np.full(n, cfg.n_out, np.int32)
    if fit is None:
        raise ValueError("trace config: lengths_from is required unless n_in and n_out are set")
    n_in, n_out = fit.sample(n, rng)
    if cfg.n_in is not None:
        n_in = np.full(n, cfg.n_in, np.int32)
    if cfg.n_out is not None:
        n_out = np.full(n, cfg.n_out, np.int32)
    return n_in, n_out

"""Typed configuration of one trace load: which trace, and how to window, sample and scale it."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NAMED_TRACES = (
    "azure_chat",
    "azure_code",
    "mooncake_conversation",
    "mooncake_synthetic",
    "azure_chat_2024",
    "azure_code_2024",
    "burstgpt",
    "synthetic",
    "closed_loop",
)
"""Names accepted by `traces.load`; `file` (with `path`) loads any CSV/JSONL/Parquet in a known format."""
GENERATED = ("synthetic", "closed_loop")
"""Traces drawn from the seed rather than read from a file."""
THINKS = ("fixed", "exponential")
OPEN_LOOP_OPTIONS = {"start_s": 0.0, "duration_s": None, "sample_frac": 1.0, "rate_scale": 1.0, "max_requests": None}
"""Options that reshape a trace's arrivals, with their no-op values (a closed loop has no arrivals to reshape)."""

ARRIVALS = ("poisson", "gamma")
ONLY_FOR = {
    **dict.fromkeys(
        ("rate_per_s", "arrival", "cv", "turns", "open_conversations", "shared_prefix_tokens", "hash_block_tokens"),
        ("synthetic",),
    ),
    **dict.fromkeys(("num_requests", "n_in", "n_out", "lengths_from"), ("synthetic", "closed_loop")),
    **dict.fromkeys(("concurrency", "think_s", "think"), ("closed_loop",)),
    **dict.fromkeys(("file", "keep_failed"), ("burstgpt",)),
}
"""TraceConfig options read by some traces only: option -> the traces that read it."""
BURSTGPT_MODELS = ("ChatGPT", "GPT-4")


@dataclass(frozen=True)
class TraceConfig:
    """One trace and the seeded options applied to it (times in seconds, rates in requests/s).

    Order of the options: model filter, window (`start_s`, `duration_s`, in source-trace seconds
    from its first request), random sampling (`sample_frac`), rate scaling (`rate_scale` > 1
    compresses inter-arrival times: heavier load), then `max_requests`. The result always
    starts at 0.0 s.

    Prefix sharing (synthetic only; `traces.synthetic.conversations`): `turns` is the mean number
    of turns of a conversation (geometric draws; 1: every request is its own conversation). Each
    arrival goes to one of `open_conversations` open conversations picked at random (seeded), a
    finished one replaced by a new one, so a conversation's turns arrive in order, interleaved
    with the others' (about `open_conversations` arrivals apart). Turn k's prompt is turn k−1's
    prompt, its output, and a new message of the drawn `n_in` tokens, so prompts grow along a
    conversation (past `n_in` or the fitted trace's maximum). Every prompt starts with a system
    prompt of `shared_prefix_tokens` tokens (counted in `n_in`). With `turns` > 1 or a shared
    prefix the trace gets `conversation`, `turn` (1-based) and `hash_ids` columns: each prompt's
    blocks of `hash_block_tokens` tokens, a full block's id fixed by the content up to its end
    (the system prompt's, or its conversation's), the last, partial block's unique; and
    `attrs["hash_block_tokens"]`.
    """

    name: str = "azure_chat"
    path: str | None = None
    start_s: float = 0.0
    duration_s: float | None = None
    max_requests: int | None = None
    sample_frac: float = 1.0
    rate_scale: float = 1.0
    seed: int = 0
    cache_dir: str | None = None
    download: bool = True
    # synthetic
    rate_per_s: float = 1.0
    num_requests: int = 1000
    arrival: str = "poisson"
    cv: float = 1.0
    n_in: int | None = None
    n_out: int | None = None
    lengths_from: str | None = "azure_chat"
    # synthetic prefix sharing: multi-turn conversations, a shared system prompt, `hash_ids` blocks
    turns: float = 1.0
    open_conversations: int = 64
    shared_prefix_tokens: int = 0
    hash_block_tokens: int = 512
    # BurstGPT (model also filters any trace that has a `model` column)
    file: int = 1
    keep_failed: bool = False
    model: str | None = None
    # closed_loop: `concurrency` clients, each sending its next request `think_s` after the last finished
    concurrency: int = 1
    think_s: float = 0.0
    think: str = "fixed"

    def __post_init__(self) -> None:
        _check_name(self)
        _check_options(self)
        _check_synthetic(self)
        _check_closed_loop(self)
        _check(self.file in (1, 2), "file", self.file, "1 or 2")
        _check(
            self.model is None or self.model in BURSTGPT_MODELS,
            "model",
            self.model,
            f"one of {BURSTGPT_MODELS} or null",
        )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TraceConfig:
        """Build from a mapping (e.g. `OmegaConf.to_container(cfg.trace)`); unknown keys fail."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"trace config: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**dict(values))

    def unused_keys(self) -> tuple[str, ...]:
        """The options this trace does not read (another trace's: `ONLY_FOR`)."""
        return tuple(key for key, names in ONLY_FOR.items() if self.name not in names)


def _check(ok: bool, key: str, value: object, expected: str) -> None:
    if not ok:
        raise ValueError(f"trace config: {key}={value!r} is invalid, expected {expected}")


def _check_name(c: TraceConfig) -> None:
    _check(c.name in NAMED_TRACES or c.name == "file", "name", c.name, f"one of {NAMED_TRACES} or 'file'")
    _check(
        (c.name == "file") == (c.path is not None), "path", c.path, "a file path when name='file', and null otherwise"
    )


def _check_options(c: TraceConfig) -> None:
    _check(c.start_s >= 0, "start_s", c.start_s, "a number >= 0 (seconds)")
    _check(c.duration_s is None or c.duration_s > 0, "duration_s", c.duration_s, "null or a number > 0 (seconds)")
    _check(c.max_requests is None or c.max_requests >= 1, "max_requests", c.max_requests, "null or an integer >= 1")
    _check(0 < c.sample_frac <= 1, "sample_frac", c.sample_frac, "a fraction in (0, 1]")
    _check(c.rate_scale > 0, "rate_scale", c.rate_scale, "a number > 0")


def _check_synthetic(c: TraceConfig) -> None:
    _check(c.rate_per_s > 0, "rate_per_s", c.rate_per_s, "a number > 0 (requests/s)")
    _check(c.num_requests >= 1, "num_requests", c.num_requests, "an integer >= 1")
    _check(c.arrival in ARRIVALS, "arrival", c.arrival, f"one of {ARRIVALS}")
    _check(c.cv > 0, "cv", c.cv, "a number > 0 (coefficient of variation of inter-arrivals)")
    for key in ("n_in", "n_out"):
        value = getattr(c, key)
        _check(value is None or value >= 1, key, value, "null or an integer >= 1 (tokens)")
    named = tuple(n for n in NAMED_TRACES if n not in GENERATED)
    _check(c.lengths_from is None or c.lengths_from in named, "lengths_from", c.lengths_from, f"null or one of {named}")
    _check(_number(c.turns) and c.turns >= 1, "turns", c.turns, "a number >= 1 (mean turns per conversation)")
    for key, low, unit in (
        ("open_conversations", 1, "conversations"),
        ("shared_prefix_tokens", 0, "tokens"),
        ("hash_block_tokens", 1, "tokens"),
    ):
        value = getattr(c, key)
        _check(_whole(value) and value >= low, key, value, f"an integer >= {low} ({unit})")
    if c.name in GENERATED:
        _check(
            c.lengths_from is not None or (c.n_in is not None and c.n_out is not None),
            "lengths_from",
            c.lengths_from,
            "a trace name unless both n_in and n_out are set",
        )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_closed_loop(c: TraceConfig) -> None:
    _check(_whole(c.concurrency) and c.concurrency >= 1, "concurrency", c.concurrency, "an integer >= 1 (clients)")
    _check(math.isfinite(c.think_s) and c.think_s >= 0, "think_s", c.think_s, "a number >= 0 (s)")
    _check(c.think in THINKS, "think", c.think, f"one of {THINKS}")
    if c.name == "closed_loop":
        for key, default in OPEN_LOOP_OPTIONS.items():
            value = getattr(c, key)
            _check(value == default, key, value, f"{default!r}: a closed loop's arrivals come from its clients")

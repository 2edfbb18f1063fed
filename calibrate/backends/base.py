"""The small interface every inference backend implements, and the exact-length check."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from calibrate.models import ModelInfo


class BackendNotInstalledError(ImportError):
    """The chosen backend's engine is not installed; the message says how to install it."""


class OutputLengthError(RuntimeError):
    """A request generated a number of tokens other than asked: the point is an error, not a row."""


@dataclass(frozen=True)
class EngineLimits:
    """What an engine is built for: batch cap, longest sequence (tokens), token budget per step."""

    max_batch_size: int
    max_seq_len: int
    max_num_tokens: int | None = None


@dataclass(frozen=True)
class GenerationResult:
    """Output lengths of every request, and mean per-request TTFT / TPOT (s) when the engine reports them."""

    output_lengths: tuple[int, ...]
    ttft_s: float | None = None
    tpot_s: float | None = None


class Backend(Protocol):
    name: str
    model_info: ModelInfo

    def start(self, limits: EngineLimits) -> None:
        """Build (or keep, if the limits are unchanged) the engine for these limits."""

    def generate(self, prompts: Sequence[Sequence[int]], n_out: int) -> GenerationResult:
        """Run every prompt (token ids) to exactly `n_out` new tokens, end-of-sequence ignored."""

    def device_name(self) -> str:
        """What runs the model (the GPU's name, or "cpu")."""

    def close(self) -> None: ...


def check_lengths(result: GenerationResult, num_requests: int, n_out: int) -> None:
    """Raise `OutputLengthError` unless there are `num_requests` outputs of exactly `n_out` tokens."""
    lengths = result.output_lengths
    if len(lengths) != num_requests:
        raise OutputLengthError(f"expected {num_requests} outputs, the engine returned {len(lengths)}")
    bad = sorted({n for n in lengths if n != n_out})
    if bad:
        count = sum(n != n_out for n in lengths)
        raise OutputLengthError(
            f"{count} of {num_requests} requests generated {bad} tokens instead of n_out={n_out}; "
            "the engine stopped early or ran on (is end-of-sequence really ignored?)"
        )

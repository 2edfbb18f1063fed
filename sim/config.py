"""Typed, validated configuration of a simulation run (the schemas behind `conf/`).

Hydra composes `conf/sim.yaml`; the entry point turns the composed tree into these frozen
dataclasses with `sim.schema.build` (unknown keys and bad values fail at start-up, and the message names
the key). Library code takes only these dataclasses, never a DictConfig.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sim.schema import build, check

if TYPE_CHECKING:
    from sim.schedulers.base import Scheduler

SERVER_MODES = ("continuous", "static")


@dataclass(frozen=True)
class ServerConfig:
    """One serving engine (TensorRT-LLM in-flight batching / vLLM continuous batching).

    mode: 'continuous' admits at every step; 'static' forms a batch only when the server is
    empty and runs it until its longest request finishes.
    max_batch_size: sequences per step. max_num_tokens: tokens per step (decodes count one
    each; null: no limit). chunked_prefill: split prompts to fit the token budget (null: the
    scheduler's default, on for vllm, off for the TensorRT-LLM schedulers). prefix_caching: reuse
    the KV of cached prompt prefix blocks when the trace has `hash_ids` (`sim.kernel.prefix`;
    null: the scheduler's default, on as vLLM, SGLang and TensorRT-LLM ship it, off where it is
    not modelled).
    kv_memory_fraction: share of GPU memory usable for weights, the sampler's memory for a batch of
    max_batch_size and the KV cache;
    kv_capacity_tokens overrides the KV size derived from the oracle's memory spec.
    exact_steps: advance one step per event (the slow reference mode).
    scheduler: how batches form and KV cache is managed: a name of `sim.schedulers.SCHEDULERS`
    (one plug-in module each: vllm, trtllm_max_utilization, trtllm_no_evict, sglang, ...).
    scheduler_options: that scheduler's own settings (its `Options` dataclass; null: defaults).
    block_size: KV-cache block (tokens) of the paged schedulers.
    record_features: log every span's summed step features (`ServerStats.span_features`), for
    calibrating on replayed runs.
    """

    scheduler: str = "vllm"
    scheduler_options: dict[str, Any] | None = None
    block_size: int = 16
    mode: str = "continuous"
    max_batch_size: int = 256
    max_num_tokens: int | None = 8192
    chunked_prefill: bool | None = None
    prefix_caching: bool | None = None
    kv_memory_fraction: float = 0.9
    kv_capacity_tokens: int | None = None
    exact_steps: bool = False
    record_features: bool = False

    def __post_init__(self) -> None:
        from sim.schedulers import SCHEDULERS  # its plug-ins import this module's checks

        check(
            self.scheduler in SCHEDULERS,
            "server.scheduler",
            f"must be one of {tuple(SCHEDULERS)}, got {self.scheduler!r}",
        )
        self.scheduler_settings()
        check(self.block_size >= 1, "server.block_size", f"must be ≥ 1 (tokens), got {self.block_size}")
        check(
            self.mode in SERVER_MODES,
            "server.mode",
            f"must be one of {SERVER_MODES}, got {self.mode!r}",
        )
        check(
            self.max_batch_size >= 1,
            "server.max_batch_size",
            f"must be ≥ 1, got {self.max_batch_size}",
        )
        if self.max_num_tokens is not None:
            check(
                self.max_num_tokens >= self.max_batch_size,
                "server.max_num_tokens",
                f"must be null or ≥ server.max_batch_size ({self.max_batch_size}), got {self.max_num_tokens}",
            )
        check(
            0.0 < self.kv_memory_fraction <= 1.0,
            "server.kv_memory_fraction",
            f"must be in (0, 1], got {self.kv_memory_fraction}",
        )
        if self.kv_capacity_tokens is not None:
            check(
                self.kv_capacity_tokens >= 1,
                "server.kv_capacity_tokens",
                f"must be null or ≥ 1, got {self.kv_capacity_tokens}",
            )

    def scheduler_settings(self) -> Any:
        """The scheduler's `Options`, built from `scheduler_options` (unknown keys, wrong types and
        bad values name the key)."""
        from sim.schedulers import SCHEDULERS

        return build(SCHEDULERS[self.scheduler].Options, self.scheduler_options, "server.scheduler_options")

    def make_scheduler(self) -> Scheduler:
        """The scheduler an engine under this config runs: its plug-in with its checked `Options`."""
        from sim.schedulers import SCHEDULERS

        return SCHEDULERS[self.scheduler](self.scheduler_settings())


@dataclass(frozen=True)
class SloConfig:
    """Latency targets (s): a request meets its SLO if TTFT ≤ ttft_s and TPOT ≤ tpot_s."""

    ttft_s: float = 1.0
    tpot_s: float = 0.1

    def __post_init__(self) -> None:
        check(self.ttft_s > 0, "slo.ttft_s", f"must be > 0 (s), got {self.ttft_s}")
        check(self.tpot_s > 0, "slo.tpot_s", f"must be > 0 (s), got {self.tpot_s}")


CLOCK_POLICIES = ("static", "slo")  # gpu.clock_policy: a fixed clock, or the SLO-aware controller


@dataclass(frozen=True)
class GpuConfig:
    """GPU settings: clock_mhz locks the SM clock (MHz) of every replica (null: the maximum clock,
    where the oracles were calibrated); checked against the GPU's table (`oracle.clock_specs`).
    power_limit_w caps every GPU's power (W; null: the board's own limit, the oracle's
    `power_limit_w`): a step that would draw more runs at the highest clock whose power fits.
    clock_policy: `static` (that clock) or `slo`, an SLO-aware frequency controller that runs each
    step at the lowest clock keeping it within `slo_headroom` × slo.tpot_s (s). clock_switch_s:
    the controller's clock-switch latency (s; null: the GPU's, `oracle.clock_specs`; 0: it switches
    at every step): it holds a clock it set for that long before it may set another."""

    clock_mhz: int | None = None
    power_limit_w: float | None = None
    clock_policy: str = "static"
    slo_headroom: float = 0.5  # steps with prefill chunks run at full clock between them: leave room
    clock_switch_s: float | None = None

    def __post_init__(self) -> None:
        if self.clock_mhz is not None:
            check(
                self.clock_mhz > 0, "gpu.clock_mhz", f"must be null or a positive number of MHz, got {self.clock_mhz}"
            )
        if self.power_limit_w is not None:
            check(
                math.isfinite(self.power_limit_w) and self.power_limit_w > 0,
                "gpu.power_limit_w",
                f"must be null or a positive number of W, got {self.power_limit_w}",
            )
        check(
            self.clock_policy in CLOCK_POLICIES,
            "gpu.clock_policy",
            f"must be one of {CLOCK_POLICIES}, got {self.clock_policy!r}",
        )
        check(0 < self.slo_headroom <= 1, "gpu.slo_headroom", f"must be in (0, 1], got {self.slo_headroom}")
        if self.clock_switch_s is not None:
            check(
                math.isfinite(self.clock_switch_s) and 0 <= self.clock_switch_s <= 60,
                "gpu.clock_switch_s",
                f"must be null (the GPU's) or a number of s in [0, 60], got {self.clock_switch_s}",
            )

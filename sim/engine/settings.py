"""A replica's engine settings, resolved from its config and scheduler: what the simple reference
`sim.engine.simple.SimpleEngine` and the compiled kernel's `sim.kernel.engine.KernelEngine` both
read, so that the two engines run under the same settings.
"""

from __future__ import annotations

import warnings
from typing import Any

from sim.config import ServerConfig
from sim.engine.jobs import JobTable
from sim.engine.kv import KvLayout
from sim.schedulers.base import Scheduler
from sim.schema import ConfigError


def settings(scheduler: Scheduler, config: ServerConfig, kv: KvLayout) -> dict[str, Any]:
    """A replica's engine settings, resolved from its config and scheduler (both engines read these)."""
    cls = type(scheduler)
    return {
        "cap": kv.capacity_units,
        "fit": kv.max_tokens(kv.capacity_units),  # the longest sequence the cache holds (tokens)
        "max_seqs": config.max_batch_size,
        "max_tokens": config.max_num_tokens or 1 << 62,
        "chunked": cls.chunked_prefill if config.chunked_prefill is None else config.chunked_prefill,
        "reserve": cls.reserve_full,
        "static": config.mode == "static",
        "requeue_front": cls.requeue_front,
        "admit_after": cls.admit_after_preemption,
    }


class PrefixCachingOffWarning(UserWarning):
    """Prefix caching, on by the scheduler's default, is off because this replica cannot model it."""


def prefix_cache_refusal(scheduler: type[Scheduler], kv: KvLayout, block_tokens: int) -> str:
    """Why a replica of this scheduler and KV layout cannot model prefix caching of a trace's
    prefix blocks of `block_tokens` tokens ('' where it can)."""
    if scheduler.reserve_full:
        return f"the {scheduler.name} scheduler reserves whole requests; block reuse beside that is not modelled"
    if kv.window_units:
        return "this model has sliding-window layers; prefix caching is modelled for full attention only"
    if kv.state_units:
        return "this model keeps a Mamba state per sequence, which the prefix cache does not model"
    if block_tokens % kv.block_size:
        return (
            f"server.block_size ({kv.block_size} tokens) does not divide the trace's prefix blocks "
            f"({block_tokens} tokens); choose a block size that does"
        )
    return ""


def prefix_settings(scheduler: Scheduler, config: ServerConfig, kv: KvLayout, jobs: JobTable) -> dict[str, int]:
    """The prefix cache's settings (`sim.kernel.prefix`): on (`pc`) when the scheduler's default or
    `server.prefix_caching` says so and the jobs have prompt blocks; tokens (`hb`) and KV units
    (`bu`) per prompt block. A layout it cannot model is refused when asked for, else warned of."""
    cls = type(scheduler)
    asked = config.prefix_caching
    on = cls.prefix_caching if asked is None else asked
    blocks = jobs.prefix
    if not on or blocks is None:
        return {"pc": 0, "hb": 1, "bu": 0}
    why = prefix_cache_refusal(cls, kv, blocks.block_tokens)
    if why:
        if asked:
            raise ConfigError(f"server.prefix_caching=true cannot be served: {why} (set it to false)")
        warnings.warn(f"prefix caching is off: {why}", PrefixCachingOffWarning, stacklevel=2)
        return {"pc": 0, "hb": 1, "bu": 0}
    hb = blocks.block_tokens
    return {"pc": 1, "hb": hb, "bu": kv.full_units * (hb // kv.block_size)}

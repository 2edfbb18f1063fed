"""How much KV cache a replica holds: its GPU memory times `server.kv_memory_fraction` less the
weights and the sampler's working memory for a full batch, in units of `sim.engine.kv.KvLayout`
(or `server.kv_capacity_tokens` when given), and the units of a hybrid's per-sequence Mamba state."""

from __future__ import annotations

import math

from oracle.model import MemorySpec, Oracle
from sim.config import ServerConfig
from sim.engine.kv import KvLayout
from sim.schema import ConfigError


def replica_kv(oracle: Oracle, config: ServerConfig) -> KvLayout:
    """The KV layout of a replica serving `oracle` under engine `config` (ConfigError if none fits)."""
    return kv_layout(
        oracle.memory,
        block_size=config.block_size,
        memory_fraction=config.kv_memory_fraction,
        capacity_tokens=config.kv_capacity_tokens,
        name=oracle.name,
        max_seqs=config.max_batch_size,
    )


def kv_layout(
    memory: MemorySpec | None,
    *,
    block_size: int,
    memory_fraction: float,
    capacity_tokens: int | None,
    name: str,
    max_seqs: int = 0,
) -> KvLayout:
    """The layout of a replica: from the oracle's memory spec (holding back sampler memory for
    `max_seqs` sequences), or `capacity_tokens` if given."""
    windowed = memory is not None and memory.window_layers > 0 and memory.window_tokens > 0
    if windowed:
        assert memory is not None
        full, window = memory.kv_layers - memory.window_layers, memory.window_layers
        window_blocks = -(-(memory.window_tokens - 1) // block_size) + 1
    else:
        full, window, window_blocks = 1, 0, 0
    if memory is None and capacity_tokens is None:
        raise ConfigError(
            f"oracle {name!r} has no memory spec, so the KV-cache size is unknown: set server.kv_capacity_tokens"
        )
    unit_bytes = (
        0.0 if memory is None else block_size * memory.kv_bytes_per_token / ((full + window) if windowed else 1)
    )
    state = 0 if memory is None else math.ceil(memory.seq_state_bytes / unit_bytes)  # a hybrid's Mamba state
    if capacity_tokens is not None:
        return KvLayout(block_size, full, window, window_blocks, capacity_tokens // block_size * (full + window), state)
    assert memory is not None
    free = memory.kv_free_bytes(memory_fraction, max_seqs)
    capacity = int(free // unit_bytes) if free > 0 else 0
    if capacity < full + window + state:
        raise ConfigError(
            f"oracle {name!r}: the weights and the sampler's memory for {max_seqs} sequences leave no "
            f"KV-cache room at server.kv_memory_fraction={memory_fraction}: lower server.max_batch_size "
            "or raise server.kv_memory_fraction"
        )
    return KvLayout(block_size, full, window, window_blocks, capacity, state)

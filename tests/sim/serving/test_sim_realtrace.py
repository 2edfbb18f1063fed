"""Closed-form spans against the step-by-step reference on a real trace."""

from __future__ import annotations

import numpy as np
import pytest

import traces
from sim.config import ServerConfig
from sim.serving.run import simulate


@pytest.mark.parametrize(
    "server",
    [
        ServerConfig(scheduler="trtllm_no_evict"),
        ServerConfig(scheduler="trtllm_no_evict", chunked_prefill=True, max_num_tokens=1024, max_batch_size=32),
        ServerConfig(scheduler="vllm"),
        ServerConfig(scheduler="vllm", kv_capacity_tokens=24_000, max_batch_size=64),
        ServerConfig(scheduler="trtllm_max_utilization", kv_capacity_tokens=24_000, max_batch_size=64),
    ],
    ids=["no_evict", "no_evict_chunked", "vllm", "vllm_preempting", "max_util_preempting"],
)
def test_fast_and_exact_steps_agree_on_azure_chat(llama, server):
    requests = traces.load("azure_chat", max_requests=1500, rate_scale=3.0)
    fast = simulate(requests, llama, server).requests
    exact = simulate(requests, llama, ServerConfig(**{**server.__dict__, "exact_steps": True})).requests
    assert fast["completed"].equals(exact["completed"])
    assert fast["preemptions"].equals(exact["preemptions"])
    if server.kv_capacity_tokens:
        assert fast["preemptions"].sum() > 0  # the small cache forces preemptions
    for col in ("energy_j", "ttft_s", "tpot_s", "e2e_s"):
        a, b = fast[col].to_numpy(), exact[col].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b))
        m = ~np.isnan(a)
        assert np.max(np.abs(a[m] - b[m]) / np.abs(b[m])) <= 1e-9, col

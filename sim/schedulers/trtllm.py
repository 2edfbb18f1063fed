"""TensorRT-LLM's capacity schedulers (`CapacitySchedulerPolicy` of its LLM API).

Chunked prefill is off by default (`enable_chunked_prefill`), and admissions go on in a step
that paused a request.
"""

from __future__ import annotations

from sim.schedulers import register
from sim.schedulers.base import Scheduler


@register
class TrtllmMaxUtilization(Scheduler):
    """MAX_UTILIZATION: KV paged as tokens are produced; when the cache is full the most
    recently started request is paused, and recomputed when resumed."""

    name = "trtllm_max_utilization"
    description = "TensorRT-LLM MAX_UTILIZATION: paged KV, pause and recompute"
    admit_after_preemption = True
    chunked_prefill = False


@register
class TrtllmNoEvict(Scheduler):
    """GUARANTEED_NO_EVICT: a request's full n_in + n_out of KV is reserved at admission and
    never evicted."""

    name = "trtllm_no_evict"
    description = "TensorRT-LLM GUARANTEED_NO_EVICT: reserve n_in + n_out"
    reserve_full = True
    prefix_caching = False  # TensorRT-LLM reuses blocks here too; reuse beside a whole reservation is not modelled
    admit_after_preemption = True
    chunked_prefill = False

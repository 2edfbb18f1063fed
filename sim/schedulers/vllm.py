"""vLLM V1's scheduler: paged KV, chunked prefill, preemption by recomputation.

KV blocks are allocated as prompt chunks are prefilled and as decode steps produce tokens. Each
step schedules the running sequences first, then, if no sequence was preempted in this step,
waiting requests in FCFS order. When a running sequence needs a block and none is free, the most
recently admitted running sequence is preempted: its blocks are freed and it goes back to the
front of the queue, to re-prefill its prompt and the tokens it had generated.
"""

from __future__ import annotations

from sim.schedulers import register
from sim.schedulers.base import Scheduler


@register
class Vllm(Scheduler):
    name = "vllm"
    description = "vLLM V1: paged KV, chunked prefill, preemption by recomputation"

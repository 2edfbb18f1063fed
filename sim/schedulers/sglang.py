"""SGLang's scheduler: paged KV with admission headroom for the running requests' growth.

SGLang admits a waiting request only if the KV cache left after it can still hold a share of
what the running requests will generate: each running request is charged its remaining
output (clipped at `clip_max_new_tokens`) times `new_token_ratio`, and each request admitted in
the step its whole prompt (not only the chunk prefilled now) plus its clipped output left
(`PrefillAdder`, `schedule_policy.py`); a request whose prompt and output exceed the whole cache
is refused on arrival.
The ratio starts at `init_new_token_ratio`, falls by (init − min) / `decay_steps` per decode
step to min = init × `min_ratio_factor`, returns to init when the server is idle, and after a
retraction is set to the share of the remaining outputs already generated, plus
`retract_decode_steps` tokens per request (`Scheduler.update_running_batch`,
`ScheduleBatch.retract_decode`). The retracted (preempted) request is the one with the fewest
output tokens, the longest prompt among those; it goes to the back of the queue.

Defaults are SGLang's (`global_config.py`: SGLANG_INIT_NEW_TOKEN_RATIO 0.7,
SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR 0.14, SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS 600,
retract_decode_steps 20; `SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION` 4096). Not modelled: SGLang runs
prefill batches apart from decode batches unless `--enable-mixed-chunk`; here, as for the other
engines, a step decodes the running requests and prefills admitted prompts together; a
retraction frees only as much KV as the step needs (SGLang frees 20 tokens per request left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit

from sim.kernel.kv import units
from sim.kernel.lists import finish_of
from sim.schedulers import register
from sim.schedulers.base import FOREVER, CompiledHooks, EngineView, Scheduler
from sim.schema import check


@dataclass(frozen=True)
class SglangOptions:
    """SGLang's admission estimate (`server.scheduler_options`)."""

    init_new_token_ratio: float = 0.7
    min_ratio_factor: float = 0.14
    decay_steps: int = 600
    clip_max_new_tokens: int = 4096  # tokens
    retract_decode_steps: int = 20  # tokens per request

    def __post_init__(self) -> None:
        key = "server.scheduler_options"
        check(0.0 < self.init_new_token_ratio <= 1.0, f"{key}.init_new_token_ratio", "must be in (0, 1]")
        check(0.0 <= self.min_ratio_factor <= 1.0, f"{key}.min_ratio_factor", "must be in [0, 1]")
        check(self.decay_steps >= 1, f"{key}.decay_steps", "must be ≥ 1 (steps)")
        check(self.clip_max_new_tokens >= 1, f"{key}.clip_max_new_tokens", "must be ≥ 1 (tokens)")
        check(self.retract_decode_steps >= 0, f"{key}.retract_decode_steps", "must be ≥ 0 (tokens)")


# SGLang's settings and state in a replica's `hook_f` and `hook_i` (`Sglang.kernel_settings`)
SG_INIT, SG_MIN, SG_DECAY, SG_RATIO = 0, 1, 2, 3  # hook_f: new_token_ratio at start, floor, fall per step, set
SG_CLIP, SG_RETRACT, SG_SET_AT = 0, 1, 2  # hook_i: clip_max_new_tokens, retract_decode_steps, step the ratio was set


@njit(cache=True)
def kernel_never_admitted(r, n_in, n_out):  # type: ignore[no-untyped-def]
    """`Sglang.never_admitted`, compiled."""
    return units(r, n_in + n_out) > r.cap


@njit(cache=True)
def _ratio(r):  # type: ignore[no-untyped-def]
    """`Sglang.ratio`, compiled."""
    f = r.hook_f
    return max(f[SG_RATIO] - f[SG_DECAY] * (r.N - r.hook_i[SG_SET_AT]), f[SG_MIN])


@njit(cache=True)
def kernel_headroom(r):  # type: ignore[no-untyped-def]
    """`Sglang.headroom`, compiled."""
    if r.olen == 0:  # idle: SGLang re-initialises the ratio
        r.hook_f[SG_RATIO], r.hook_i[SG_SET_AT] = r.hook_f[SG_INIT], r.N
        return 0
    clip, n = r.hook_i[SG_CLIP], r.N
    if r.B and r.fmax - n > clip:  # some output left is longer than the clip
        left = 0
        j = r.ohead
        while j >= 0:
            f = finish_of(r, j)
            if f >= 0:
                left += min(f - n, clip)
            j = r.nxt[j]
    else:  # none is (`fmax` bounds the decoders' finish steps): the running sum
        left = r.fsum - r.B * n
    if r.part_j >= 0:
        j = r.part_j
        left += min(r.n_out[j] - r.generated[j], clip)
    return units(r, math.ceil(left * _ratio(r)))


@njit(cache=True)
def kernel_reserve(r, j, chunk):  # type: ignore[no-untyped-def]
    """`Sglang.reserve`, compiled."""
    gen = r.generated[j]
    target = r.n_in[j] + gen
    left = min(r.n_out[j] - gen, r.hook_i[SG_CLIP])
    return units(r, target + left) - units(r, chunk)


@njit(cache=True)
def kernel_steady_steps(r):  # type: ignore[no-untyped-def]
    """While a request waits, the headroom falls at every step (the running requests' outputs
    left shrink, and the ratio falls to its floor), so each step may admit it: spans of one step."""
    return 1 if r.qlen else FOREVER


@njit(cache=True)
def kernel_victim(r):  # type: ignore[no-untyped-def]
    """`Sglang.victim`, compiled."""
    if r.B == 0:
        return r.otail  # only the prompt mid-prefill runs
    best, k0, k1, n = -1, 0, 0, r.N
    j = r.ohead
    while j >= 0:
        f = finish_of(r, j)
        if f >= 0:
            a, b = r.n_out[j] - (f - n), -r.n_in[j]
            if best < 0 or a < k0 or (a == k0 and b <= k1):
                best, k0, k1 = j, a, b
        j = r.nxt[j]
    return best


@njit(cache=True)
def kernel_preempted(r):  # type: ignore[no-untyped-def]
    """`Sglang.preempted`, compiled."""
    asked = done = 0
    n = r.N
    j = r.ohead
    while j >= 0:
        f = finish_of(r, j)
        if f >= 0:
            asked += r.n_out[j]
            done += r.n_out[j] - (f - n)
        j = r.nxt[j]
    ratio = (done + r.hook_i[SG_RETRACT] * r.B) / asked if asked else 1.0
    r.hook_f[SG_RATIO], r.hook_i[SG_SET_AT] = min(ratio, 1.0), n


@register
class Sglang(Scheduler):
    name = "sglang"
    description = "SGLang: paged KV, admission headroom for running requests (new_token_ratio), retract"
    Options = SglangOptions
    admit_after_preemption = True
    requeue_front = False
    compiled = CompiledHooks(
        kernel_never_admitted, kernel_headroom, kernel_reserve, kernel_steady_steps, kernel_victim, kernel_preempted
    )

    def __init__(self, options: SglangOptions | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.min_ratio = o.init_new_token_ratio * o.min_ratio_factor
        self.decay = (o.init_new_token_ratio - self.min_ratio) / o.decay_steps  # per step
        self.set_at = (o.init_new_token_ratio, 0)  # (ratio, step it was set at)

    def kernel_settings(self) -> dict[str, Any]:
        o = self.options
        hook_f = [0.0] * 4
        hook_f[SG_INIT] = hook_f[SG_RATIO] = o.init_new_token_ratio  # the ratio starts at init, set at step 0
        hook_f[SG_MIN], hook_f[SG_DECAY] = self.min_ratio, self.decay
        hook_i = [0] * 3
        hook_i[SG_CLIP], hook_i[SG_RETRACT] = o.clip_max_new_tokens, o.retract_decode_steps
        return {"hook_f": hook_f, "hook_i": hook_i}

    def ratio(self, engine: EngineView) -> float:
        """`new_token_ratio` at the engine's next step."""
        r0, n0 = self.set_at
        return max(r0 - self.decay * (engine.N - n0), self.min_ratio)

    def never_admitted(self, engine: EngineView, n_in: Any, n_out: Any) -> Any:
        """A request whose prompt and output together exceed the whole cache: SGLang reserves
        them both (its output clipped, less what a resumed request has generated) to admit it."""
        return engine.kv.units_of(np.asarray(n_in) + n_out) > engine.cap

    def headroom(self, engine: EngineView) -> int:
        if not engine.order:  # idle: SGLang re-initialises the ratio
            self.set_at = (self.options.init_new_token_ratio, engine.N)
            return 0
        clip, jobs, n = self.options.clip_max_new_tokens, engine.jobs, engine.N
        left = sum(min(f - n, clip) for f in engine.decoders.values())  # the decoders' outputs left, clipped
        if engine.partial is not None:
            j = engine.partial[0]
            left += min(int(jobs.n_out[j] - jobs.generated[j]), clip)
        grow = math.ceil(left * self.ratio(engine))
        return engine.kv.units(grow) - (engine.kv.state_units if grow > 0 else 0)  # running: no new state

    def reserve(self, engine: EngineView, job: int, chunk: int) -> int:
        """The whole prompt (or re-prefill) and the output left, clipped, less the chunk's KV."""
        jobs = engine.jobs
        gen = int(jobs.generated[job])
        target = int(jobs.n_in[job]) + gen
        left = min(int(jobs.n_out[job]) - gen, self.options.clip_max_new_tokens)
        return engine.kv.units(target + left) - engine.kv.units(chunk)

    def victim(self, engine: EngineView) -> int:
        """The running request with the fewest output tokens, then the longest prompt; among
        equals the most recently admitted (the last of SGLang's stable descending sort)."""
        jobs, n, dec = engine.jobs, engine.N, engine.decoders
        if not dec:
            return next(reversed(engine.order))  # only the prompt mid-prefill runs
        best, key = -1, (0, 0)
        for j in engine.order:
            f = dec.get(j)
            if f is None:
                continue
            k = (int(jobs.n_out[j]) - (f - n), -int(jobs.n_in[j]))
            if best < 0 or k <= key:
                best, key = j, k
        return best

    def preempted(self, engine: EngineView) -> None:
        """The ratio after a retraction: outputs generated plus headroom over outputs asked."""
        jobs, n = engine.jobs, engine.N
        asked = sum(int(jobs.n_out[j]) for j in engine.decoders)
        done = sum(int(jobs.n_out[j]) - (f - n) for j, f in engine.decoders.items())
        ratio = (done + self.options.retract_decode_steps * len(engine.decoders)) / asked if asked else 1.0
        self.set_at = (min(ratio, 1.0), n)

"""The state of the reference engine (`sim.engine.reference.Engine`) and its books.

`EngineState` holds one replica's batch and KV state between steps and keeps its books: the
queue's sums, the decoders (finish steps, block phases, sliding-window saturation, completions)
and the read-only views the SimPy process and the checks take. The rules that change it step by
step (admission, preemption, spans, closing a step) are `Engine`'s, in `sim.engine.reference`.
"""

from __future__ import annotations

import heapq
from collections import deque

from sim.config import ServerConfig
from sim.engine.jobs import DONE, JobTable
from sim.engine.kv import BlockPhases, KvLayout
from sim.engine.prefix_cache import PrefixCache
from sim.engine.settings import prefix_settings, settings


class EngineState:
    """The batch and KV state of one replica between steps (jobs are indices into `jobs`)."""

    # Slots: with over 30 attributes an instance dict no longer shares its keys (CPython shares up
    # to 30), and every attribute read and write of the hot loops went through a dict lookup.
    __slots__ = (
        "B", "N", "S", "_bs", "_fit", "_heap", "_sat", "bu", "cache", "cap", "chunked", "config", "decoders",
        "fmax", "fsum", "hb", "jobs", "kv", "max_seqs", "max_tokens", "order", "partial", "pc", "pending", "phases",
        "preemptions", "prefilled", "queue", "queued_need", "queued_prompt", "reserve", "scheduler", "share",
        "share_c", "static", "units", "used",
    )  # fmt: skip

    def __init__(self, jobs: JobTable, config: ServerConfig, kv: KvLayout) -> None:
        self.jobs, self.config, self.kv = jobs, config, kv
        self.scheduler = config.make_scheduler()
        s = settings(self.scheduler, config, kv)
        self.chunked, self.static, self.reserve = bool(s["chunked"]), bool(s["static"]), bool(s["reserve"])
        self.max_tokens, self.max_seqs, self.cap, self._fit = s["max_tokens"], s["max_seqs"], s["cap"], s["fit"]
        self.units = kv.units_fn()  # KV units of a sequence holding `tokens` tokens
        self._bs = kv.block_size
        self.queue: deque[int] = deque()
        self.order: dict[int, None] = {}  # running sequences (decoders and a prompt mid-prefill), admission order
        self.partial: tuple[int, int, int] | None = None  # (job, tokens computed, prefill target)
        self.decoders: dict[int, tuple[int, int, int]] = {}  # job → (finish step, phase key, block weight)
        self._heap: list[tuple[int, int]] = []  # (finish step, job); stale entries skipped
        self._sat: list[tuple[int, int, int]] = []  # (step after which its window is full, finish step, job)
        self.phases = BlockPhases(kv.block_size)  # the decoders' block allocations by phase
        self.B = self.S = self.N = 0  # decoders, Σ their contexts at the next step, steps run
        self.used = 0  # KV units held
        self.pending = 0  # Σ n_in + n_out of queued and prefilling jobs (tokens)
        self.queued_need = self.queued_prompt = 0  # Σ n_in + n_out and Σ n_in of the queue (tokens)
        self.fsum = self.fmax = 0  # Σ and max of the decoders' finish steps
        self.share = self.share_c = 0.0  # Σ 1/(sequences in step), with its Neumaier compensation
        self.preemptions = 0
        self.prefilled = 0  # prompts whose prefill the last step completed (each emitted a token)
        p = prefix_settings(self.scheduler, config, kv, jobs)
        self.pc, self.hb, self.bu = bool(p["pc"]), p["hb"], p["bu"]  # prefix cache on; tokens, units a block
        self.cache = PrefixCache(jobs, self.pc, self.hb, self.bu, self.units)

    # --- queue -------------------------------------------------------------------------------
    def _count_queued(self, j: int, sign: int) -> None:
        """Add (sign 1) or remove (−1) job j in the queue's sums of n_in + n_out and of n_in."""
        n_in, n_out = self.jobs.n_in[j], self.jobs.n_out[j]
        self.queued_need += sign * (n_in + n_out)
        self.queued_prompt += sign * n_in

    @property
    def queue_len(self) -> int:
        """Queued jobs."""
        return len(self.queue)

    @property
    def running(self) -> int:
        """Running sequences (decoders and a prompt mid-prefill)."""
        return len(self.order)

    def busy(self) -> bool:
        """Whether a step has work: decoders, a prompt mid-prefill or a queue."""
        return bool(self.B or self.partial is not None or self.queue)

    def accepts_arrivals(self) -> bool:
        """Whether an arrival now could join the next step (the queue is empty and a slot is free)."""
        return not self.queue and not self.static and len(self.order) < self.max_seqs

    # --- decoders ----------------------------------------------------------------------------
    def step_need(self) -> int:
        """KV units the decoders allocate in the next step."""
        return self.phases.weights[-self.N % self._bs]

    def _start_decoding(self, j: int) -> None:
        jobs, kv, n = self.jobs, self.kv, self.N
        gen = jobs.generated[j]
        ctx = jobs.n_in[j] + gen  # context of its next decode step
        f = n + jobs.n_out[j] - gen
        key = (ctx - 1 - n) % kv.block_size
        weight = 0
        if not self.reserve:
            weight = kv.full_units
            sat_ctx = (kv.window_blocks - 1) * kv.block_size + 1
            if kv.window_units and ctx <= sat_ctx:
                weight += kv.window_units
                if n + 1 + sat_ctx - ctx < f:
                    heapq.heappush(self._sat, (n + 1 + sat_ctx - ctx, f, j))
        self.decoders[j] = (f, key, weight)
        heapq.heappush(self._heap, (f, j))
        self.phases.add(key, weight)
        self.fsum += f
        self.fmax = f if self.B == 0 or f > self.fmax else self.fmax
        self.B += 1
        self.S += ctx

    def _stop_decoding(self, j: int) -> tuple[int, int]:
        """Remove decoder j; returns (its finish step, its next context)."""
        f, key, weight = self.decoders.pop(j)
        self.phases.add(key, -weight)
        ctx = self.jobs.n_in[j] + self.jobs.n_out[j] - (f - self.N)
        self.B -= 1
        self.S -= ctx
        self.fsum -= f
        return f, ctx

    def _saturate(self) -> None:
        """Decoders whose windowed layers just filled their window allocate full-layer blocks only."""
        sat, dec, n = self._sat, self.decoders, self.N
        while sat and sat[0][0] <= n:
            _, f0, j = heapq.heappop(sat)
            entry = dec.get(j)
            if entry is None or entry[0] != f0 or entry[2] <= self.kv.full_units:
                continue
            f, key, weight = entry
            dec[j] = (f, key, self.kv.full_units)
            self.phases.add(key, self.kv.full_units - weight)

    def _complete(self) -> list[int]:
        """Decoders whose last step has run leave; returns them."""
        heap, dec, n, out, jobs = self._heap, self.decoders, self.N, [], self.jobs
        while heap and heap[0][0] <= n:
            f, j = heapq.heappop(heap)
            entry = dec.get(j)
            if entry is None or entry[0] != f:
                continue
            self._stop_decoding(j)
            jobs.generated[j] = jobs.n_out[j]
            self._finish(j, jobs.n_in[j] + jobs.n_out[j] - 1)
            out.append(j)
        return out

    def _finish(self, j: int, kv_tokens: int) -> None:
        jobs = self.jobs
        del self.order[j]
        self.used -= self.units(jobs.n_in[j] + jobs.n_out[j]) if self.reserve else self.cache.drop(j, kv_tokens)
        jobs.share[j] += self.share + self.share_c
        jobs.status[j] = DONE

    # --- prefix cache ------------------------------------------------------------------------
    @property
    def idle_blocks(self) -> dict[int, None]:
        """The prefix cache's idle blocks: cached, referenced by no one, counted as free memory."""
        return self.cache.idle_blocks

    def cached_tokens(self, j: int) -> int:
        """Tokens of job j's prompt this replica holds cached, as an admission now would find them."""
        return self.cache.lookup(j, self.jobs.n_in[j] + self.jobs.generated[j])[0] * self.hb

    def _head_idle(self) -> bool:
        """Whether the queue's head would find idle cached blocks (an eviction could change its admission)."""
        if not self.cache.idle_blocks or not self.queue:
            return False
        j = self.queue[0]
        return self.cache.lookup(j, self.jobs.n_in[j] + self.jobs.generated[j])[1] > 0

    # --- bookkeeping -------------------------------------------------------------------------
    def decoder_contexts(self) -> list[tuple[int, int]]:
        """(job, context of its next decode step) of every decoder (the exact-steps reference)."""
        jobs, n = self.jobs, self.N
        return [(j, jobs.n_in[j] + jobs.n_out[j] - (f - n)) for j, (f, _, _) in self.decoders.items()]

    def kv_units_explicit(self) -> int:
        """KV units held, summed sequence by sequence (checks the incremental count)."""
        jobs, kv = self.jobs, self.kv
        if self.reserve:
            return sum(kv.units(jobs.n_in[j] + jobs.n_out[j]) for j in self.order)
        own = {j: kv.units(c - 1) for j, c in self.decoder_contexts()}
        if self.partial is not None:
            own[self.partial[0]] = kv.units(self.partial[1])
        shared = sum(1 for refs in self.cache.blocks_cached.values() if refs)
        return sum(units - self.cache.refs.get(j, 0) * self.bu for j, units in own.items()) + shared * self.bu

    @property
    def last_finish_steps(self) -> int:
        """Steps until the last decoder finishes (0: none decoding)."""
        return self.fmax - self.N if self.B else 0

    def outstanding_tokens(self) -> int:
        """Work left (tokens): n_in + n_out of queued and prefilling jobs, plus the outputs the
        decoders still owe."""
        return self.pending + self.fsum - self.B * self.N

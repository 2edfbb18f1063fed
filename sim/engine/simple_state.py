"""The state of the simple reference engine (`sim.engine.simple.SimpleEngine`) and what is read of it.

Nothing here is kept incrementally: the KV units held, the decoders' contexts and the queue's sums
are recomputed from each sequence's own state whenever they are read.
"""

from __future__ import annotations

from collections import deque

from sim.config import ServerConfig
from sim.engine.jobs import JobTable
from sim.engine.kv import KvLayout
from sim.engine.prefix_cache import PrefixCache
from sim.engine.settings import prefix_settings, settings


class SimpleState:
    """One replica's batch and KV cache between steps, and what is read of them (jobs are indices
    into `jobs`); `SimpleEngine` advances them."""

    def __init__(self, jobs: JobTable, config: ServerConfig, kv: KvLayout) -> None:
        self.jobs, self.kv = jobs, kv
        self.scheduler = config.make_scheduler()
        s = settings(self.scheduler, config, kv)
        self.chunked, self.static, self.reserve = bool(s["chunked"]), bool(s["static"]), bool(s["reserve"])
        self.max_tokens, self.max_seqs, self.cap, self.fit = s["max_tokens"], s["max_seqs"], s["cap"], s["fit"]
        p = prefix_settings(self.scheduler, config, kv, jobs)
        self.hb, self.bu = p["hb"], p["bu"]  # tokens and KV units of a prompt block
        self.cache = PrefixCache(jobs, bool(p["pc"]), self.hb, self.bu, kv.units)
        self.queue: deque[int] = deque()
        self.order: dict[int, None] = {}  # running sequences, in admission order
        self.partial: tuple[int, int, int] | None = None  # prompt mid-prefill: (job, tokens computed, target)
        self.decoding: dict[int, None] = {}  # running sequences past their prefill
        self.held: dict[int, int] = {}  # running sequence → tokens of KV it holds (a step's allocated at its start)
        self.N = 0  # steps run
        self.preemptions = 0
        self.prefilled = 0  # prefills the last step completed

    # --- what the running sequences hold and need ------------------------------------------
    def _grow(self, j: int, tokens: int) -> int:
        """KV units running sequence j allocates to hold `tokens` more tokens (0 when reserved)."""
        if self.reserve:
            return 0
        held = self.held[j]
        return self.kv.units(held + tokens) - self.kv.units(held)

    @property
    def used(self) -> int:
        """KV units held: each running sequence's own, and every referenced cached block once
        (idle cached blocks are free memory)."""
        jobs, units = self.jobs, self.kv.units
        if self.reserve:
            return sum(units(jobs.n_in[j] + jobs.n_out[j]) for j in self.order)
        own = sum(units(self.held[j]) - self.cache.refs.get(j, 0) * self.bu for j in self.order)
        return own + sum(1 for refs in self.cache.blocks_cached.values() if refs) * self.bu

    def step_need(self) -> int:
        """KV units the decoders allocate in the next step."""
        return sum(self._grow(j, 1) for j in self.decoding)

    # --- what the server, its listeners and the scheduler's hooks read ----------------------
    @property
    def B(self) -> int:
        """Decoders."""
        return len(self.decoding)

    @property
    def S(self) -> int:
        """Σ the decoders' contexts at their next step (tokens)."""
        return sum(c for _, c in self.decoder_contexts())

    def decoder_contexts(self) -> list[tuple[int, int]]:
        """(job, context of its next decode step) of every decoder."""
        jobs = self.jobs
        return [(j, jobs.n_in[j] + jobs.generated[j]) for j in self.decoding]

    @property
    def decoders(self) -> dict[int, int]:
        """job → the step after which it is done, of every decoder (`EngineView`)."""
        jobs, n = self.jobs, self.N
        return {j: n + jobs.n_out[j] - jobs.generated[j] for j in self.decoding}

    @property
    def fmax(self) -> int:
        """The last of the decoders' finish steps (0: none decoding)."""
        return max(self.decoders.values(), default=0)

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
        return bool(self.order or self.queue)

    def accepts_arrivals(self) -> bool:
        """Whether an arrival now could join the next step (the queue is empty and a slot is free)."""
        return not self.queue and not self.static and len(self.order) < self.max_seqs

    @property
    def queued_need(self) -> int:
        """Σ n_in + n_out of the queue (tokens)."""
        return sum(self.jobs.n_in[j] + self.jobs.n_out[j] for j in self.queue)

    @property
    def queued_prompt(self) -> int:
        """Σ n_in of the queue (tokens)."""
        return sum(self.jobs.n_in[j] for j in self.queue)

    def outstanding_tokens(self) -> int:
        """Work left (tokens): n_in + n_out of queued and prefilling jobs, and the output tokens
        the decoders still owe."""
        jobs = self.jobs
        prefilling = [j for j in self.order if j not in self.decoding]  # admitted, (re)prefill not done
        owed = sum(jobs.n_out[j] - jobs.generated[j] for j in self.decoding)
        return self.queued_need + sum(jobs.n_in[j] + jobs.n_out[j] for j in prefilling) + owed

    @property
    def last_finish_steps(self) -> int:
        """Steps until the last decoder finishes (0: none decoding)."""
        return self.fmax - self.N if self.B else 0

    @property
    def idle_blocks(self) -> dict[int, None]:
        """The prefix cache's idle blocks: cached, referenced by no one, counted as free memory."""
        return self.cache.idle_blocks

    def cached_tokens(self, j: int) -> int:
        """Tokens of job j's prompt this replica holds cached, as an admission now would find them."""
        return self.cache.lookup(j, self.jobs.n_in[j] + self.jobs.generated[j])[0] * self.hb

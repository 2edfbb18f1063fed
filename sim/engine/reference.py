"""Batch formation of one serving engine as plain Python: admission, KV accounting, preemption.

No SimPy and no costs here: `Engine` decides, at each step boundary, which sequences the next
step decodes and which prompt chunks it prefills, and keeps the KV cache's books. The SimPy
process (`sim.serving.server`) asks it for steps and moves the clock.

Schedulers are plug-ins (`sim.schedulers`, chosen by `server.scheduler`): their class attributes
say whether KV is reserved whole at admission, whether admission goes on in a step that
preempted, the chunked-prefill default and where a preempted sequence is requeued; their hooks
pick the preemption victim and the KV headroom an admission leaves. Paged schedulers allocate KV
blocks as prompt chunks are prefilled and as decode steps produce tokens; each step schedules
the running sequences first (decodes count one token of the `max_num_tokens` budget; a prompt
mid-prefill takes the next chunk), then waiting requests in FCFS order within `max_batch_size`
sequences, the token budget and free blocks. When a running sequence needs a block and none is
free, the scheduler's victim is preempted by recomputation: its blocks are freed, it is requeued,
and it later re-prefills its prompt plus the tokens it had generated. Without chunked prefill, a
request whose prompt plus n_out − 1 tokens exceeds `max_num_tokens` is rejected on arrival, since
its recomputation after a preemption could never run (vLLM requires max_num_batched_tokens ≥
max_model_len without chunking). A reserving scheduler (TensorRT-LLM's GUARANTEED_NO_EVICT)
holds a request's full n_in + n_out of KV from admission and never evicts.

Fast spans: while no prompt is being prefilled and the queue cannot be admitted, every step is a
plain decode step of the same sequences. A decoder needs a new block every `block_size` steps, at a
phase fixed while it decodes, so the blocks a span allocates are a sum over a table of weights by
phase; `span_limit` is the number of steps until the next completion, sliding-window saturation or
the first step whose blocks would not fit.

Prefix cache (vLLM V1's automatic prefix caching, when `pc`): a prompt's full blocks of `hb`
tokens (`sim.engine.prefix.PrefixBlocks`) are cached once its prefill is done, shared by every running
sequence that references them and counted once in `used` (`bu` units each); with no reference
left a block stays cached, idle, and counts as free memory: an allocation that needs it evicts
idle blocks, least recently used first. An admission references its prompt's longest cached
run of leading blocks (never its last token) and prefills from there. `sim.kernel.prefix` says
the rules in full; a span stops before an eviction that could change the queue head's admission.

Convention (oracle.features): the prefill step emits a token, then decode steps read contexts
n_in + 1, n_in + 2, …; a request resumed after g tokens re-prefills n_in + g tokens and the
re-prefill emits token g + 1 (replacing the decode step at context n_in + g).

The compiled kernel (`sim.kernel.admission`, `sim.kernel.decoding`) runs these rules for servers
fed alone, with the same results bit for bit (tests/sim/kernel/test_loop.py), and for routed
fleets (`sim.kernel.fleet`, tests/sim/kernel/test_fleet.py); this class serves the SimPy process
(dynamic policies, summaries, closed loops) and the exact-steps reference: a change here goes
there too.
"""

from __future__ import annotations

import heapq
from collections import deque

from sim.config import ServerConfig
from sim.engine.jobs import DONE, REJECT_KV, REJECT_TOKEN_BUDGET, REJECTED, JobTable
from sim.engine.kv import BlockPhases, KvLayout
from sim.engine.ledger import compensated_add
from sim.engine.settings import prefix_settings, settings
from sim.schedulers import SCHEDULERS

Prefill = list[tuple[int, int, int]]  # (job, chunk tokens, tokens of this prefill already computed)


class Engine:
    """The batch and KV state of one replica between steps (jobs are indices into `jobs`)."""

    # Slots: with 33 attributes an instance dict no longer shares its keys (CPython shares up to
    # 30), and every attribute read and write of the hot loops went through a dict lookup.
    __slots__ = (
        "B",
        "N",
        "S",
        "_bs",
        "_fit",
        "_heap",
        "_refs",
        "_sat",
        "blocks_cached",
        "bu",
        "cap",
        "chunked",
        "config",
        "decoders",
        "evicted",
        "fmax",
        "fsum",
        "hb",
        "idle_blocks",
        "jobs",
        "kv",
        "max_seqs",
        "max_tokens",
        "order",
        "partial",
        "pc",
        "pending",
        "phases",
        "preemptions",
        "prefilled",
        "queue",
        "queued_need",
        "queued_prompt",
        "reserve",
        "scheduler",
        "share",
        "share_c",
        "static",
        "units",
        "used",
    )

    def __init__(self, jobs: JobTable, config: ServerConfig, kv: KvLayout) -> None:
        self.jobs, self.config, self.kv = jobs, config, kv
        self.scheduler = SCHEDULERS[config.scheduler](config.scheduler_settings())
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
        self.blocks_cached: dict[int, int] = {}  # cached block → sequences referencing it
        self.idle_blocks: dict[int, None] = {}  # cached blocks no one references, least recently used first
        self._refs: dict[int, int] = {}  # job → its leading blocks it references
        self.evicted = 0

    # --- queue ---------------------------------------------------------------------------
    def enqueue(self, j: int) -> bool:
        """Queue job j, or reject it (status and reason set) if this engine can never serve it."""
        jobs = self.jobs
        n_in, n_out = jobs.n_in[j], jobs.n_out[j]
        need = n_in + n_out
        if (need if self.reserve else need - 1) > self._fit:
            jobs.status[j], jobs.reason[j] = REJECTED, REJECT_KV
            return False
        # Without chunked prefill a prompt must fit one step's token budget; on a paged engine a
        # preempted request re-prefills its prompt and up to n_out − 1 generated tokens, so that
        # must fit too (vLLM requires max_num_batched_tokens ≥ max_model_len without chunking).
        if not self.chunked and (n_in if self.reserve else need - 1) > self.max_tokens:
            jobs.status[j], jobs.reason[j] = REJECTED, REJECT_TOKEN_BUDGET
            return False
        if self.scheduler.never_admitted(self, n_in, n_out):
            jobs.status[j], jobs.reason[j] = REJECTED, REJECT_KV
            return False
        self.queue.append(j)
        self.pending += need
        self._count_queued(j, 1)
        return True

    def _count_queued(self, j: int, sign: int) -> None:
        """Add (sign 1) or remove (−1) job j in the queue's sums of n_in + n_out and of n_in."""
        n_in, n_out = self.jobs.n_in[j], self.jobs.n_out[j]
        self.queued_need += sign * (n_in + n_out)
        self.queued_prompt += sign * n_in

    # --- plain decode spans ------------------------------------------------------------------
    def step_need(self) -> int:
        """KV units the decoders allocate in the next step."""
        return self.phases.weights[-self.N % self._bs]

    def can_span(self) -> bool:
        """Whether the next step is a plain decode of the running decoders (nothing else changes)."""
        if not self.B or self.partial is not None:
            return False
        free = self.cap - self.used - self.step_need()
        return free >= 0 and not (self.queue and self._head_fits(free))

    def _head_fits(self, free: int) -> bool:
        """Whether the head of the queue fits next to the decoders, with `free` KV units left."""
        q, order = self.queue, self.order
        if not q or len(order) >= self.max_seqs or (self.static and order):
            return False
        budget = self.max_tokens - self.B
        if budget <= 0:
            return False
        j = q[0]
        jobs = self.jobs
        n_in = jobs.n_in[j]
        target = n_in + jobs.generated[j]
        hits, idle = self._lookup(j, target)
        past = hits * self.hb
        if target - past > budget:
            if not self.chunked:
                return False
            target = past + budget
        need = self.units(n_in + jobs.n_out[j]) if self.reserve else self.units(target) - (hits - idle) * self.bu
        return need + self.scheduler.reserve(self, j, target) <= free - self.scheduler.headroom(self)

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

    def span_limit(self) -> int:
        """Steps of plain decode from now: to the next completion, window saturation or KV shortage."""
        heap, sat, dec = self._heap, self._sat, self.decoders
        while True:
            f, j = heap[0]
            entry = dec.get(j)
            if entry is not None and entry[0] == f:
                break
            heapq.heappop(heap)
        k = f - self.N
        if sat:
            while sat and (sat[0][2] not in dec or dec[sat[0][2]][0] != sat[0][1]):
                heapq.heappop(sat)
            if sat and sat[0][0] - self.N < k:
                k = sat[0][0] - self.N
        k = min(k, self.scheduler.steady_steps(self))
        phases = self.phases
        if phases.total and self._head_idle():  # no eviction within a span that could change the head's admission
            k = max(1, phases.steps_within(self.N, k, self.cap - self.used - len(self.idle_blocks) * self.bu))
        if not phases.total or (self.cap - self.used) // phases.total * self._bs >= k:
            return k  # the cache holds whole cycles of allocations past k
        return phases.steps_within(self.N, k, self.cap - self.used)

    def run_span(self, steps: int, extra: float = 0.0) -> list[int]:
        """Advance the decoders `steps` plain decode steps whose energy differs from the
        coefficients' by `extra` step constants (a power cap's lower clock, `sim.kernel.costs`);
        returns the jobs that finished."""
        self.used += self.phases.over(self.N, steps)
        self._evict(self.cap - self.used)
        self.share, self.share_c = compensated_add(self.share, self.share_c, (steps + extra) / self.B)
        n = self.N = self.N + steps
        self.S += self.B * steps
        if self._sat and self._sat[0][0] <= n:
            self._saturate()
        return self._complete() if self._heap[0][0] <= n else []

    # --- general steps: preemption, chunks, admission --------------------------------------
    def form_step(self, now_s: float) -> Prefill:
        """Schedule the next step (running first, then the queue); returns its prefill work."""
        budget = self.max_tokens - self.B
        free = self.cap - self.used
        demand = self.step_need()
        part, m, part_need = self.partial, 0, 0
        if part is not None:
            m = min(part[2] - part[1], budget)
            part_need = 0 if self.reserve else self.units(part[1] + m) - self.units(part[1])
            demand += part_need
        preempted = False
        while demand > free:
            v = self.scheduler.victim(self)
            del self.order[v]
            preempted = True
            if part is not None and v == part[0]:
                demand -= part_need
                free += self._preempt_partial()
                part, m = None, 0
            else:
                need, held = self._preempt_decoder(v)
                demand -= need
                free += held
                budget += 1
            self._requeue(v)
        if preempted:
            self.scheduler.preempted(self)
        work: Prefill = []
        if part is not None and m > 0:
            work.append((part[0], m, part[1]))
            budget -= m
        # no admission beside a prompt that stays mid-prefill (one partial prompt at a time: a
        # preemption can leave token budget that its chunk, sized before, did not take)
        settled = part is None or part[1] + m >= part[2]
        self._evict(free - demand)  # the running sequences allocate first
        if self.queue and settled and (not preempted or self.scheduler.admit_after_preemption):
            demand += self._admit(work, budget, free - demand, now_s)
        self.used += demand
        return work

    def _admit(self, work: Prefill, budget: int, free: int, now_s: float) -> int:
        """FCFS admissions into `work`; returns the KV units they take."""
        jobs, q, order, cap, taken = self.jobs, self.queue, self.order, self.max_seqs, 0
        if self.static and order:
            return 0  # static batching: a batch forms only on an empty server
        sched = self.scheduler
        room = free - sched.headroom(self)  # KV units admissions may take or set aside
        n_in, n_out, generated, units = jobs.n_in, jobs.n_out, jobs.generated, self.units
        share = self.share + self.share_c
        while q and len(order) < cap and budget > 0:
            j = q[0]
            target = n_in[j] + generated[j]
            hits, idle = self._lookup(j, target)
            past = hits * self.hb
            m = min(target - past, budget)
            if past + m < target and not self.chunked:
                break  # `enqueue` rejected any request whose (re)prefill could exceed the whole budget
            need = units(n_in[j] + n_out[j]) if self.reserve else units(past + m) - (hits - idle) * self.bu
            aside = sched.reserve(self, j, past + m)
            if need + aside > room - taken:
                break
            room -= aside
            q.popleft()
            order[j] = None
            self._count_queued(j, -1)
            budget -= m
            taken += need
            work.append((j, m, past))
            if hits:
                self._take(j, hits)
            self._evict(free - taken)
            if jobs.chunks[j] == 0:
                jobs.admit_s[j] = now_s
            jobs.share[j] -= share
        return taken

    def finish_step(self, work: Prefill, extra: float = 0.0) -> tuple[list[int], list[int]]:
        """Close a step that decoded the decoders and prefilled `work`, its energy `extra` step
        constants off the coefficients': (first tokens, finished)."""
        self.share, self.share_c = compensated_add(self.share, self.share_c, (1.0 + extra) / (self.B + len(work)))
        n = self.N = self.N + 1
        self.S += self.B
        if self._sat and self._sat[0][0] <= n:
            self._saturate()
        done = self._complete() if self._heap and self._heap[0][0] <= n else []
        jobs, first, prefilled = self.jobs, [], 0
        n_in, n_out, generated = jobs.n_in, jobs.n_out, jobs.generated
        if self.partial is not None and any(w[0] == self.partial[0] for w in work):
            self.partial = None  # its chunk ran: set again below if the prompt is still unfinished
        for j, m, past in work:
            jobs.chunks[j] += 1
            gen = generated[j]
            target = n_in[j] + gen
            if past + m < target:
                self.partial = (j, past + m, target)
                continue
            prefilled += 1
            self._register(j)
            if gen == 0:
                first.append(j)
            generated[j] = gen = gen + 1
            self.pending -= n_in[j] + n_out[j]
            if gen == n_out[j]:
                self._finish(j, target)
                done.append(j)
            else:
                self._start_decoding(j)
        self.prefilled = prefilled
        return first, done

    # --- decoders ----------------------------------------------------------------------------
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
        self.used -= self.units(jobs.n_in[j] + jobs.n_out[j]) if self.reserve else self._drop(j, kv_tokens)
        jobs.share[j] += self.share + self.share_c
        jobs.status[j] = DONE

    # --- preemption --------------------------------------------------------------------------
    def _preempt_decoder(self, j: int) -> tuple[int, int]:
        """Preempt decoder j: (units it would have allocated this step, units it held)."""
        jobs = self.jobs
        f, key, weight = self.decoders[j]
        need = weight if key == -self.N % self.kv.block_size else 0
        _, ctx = self._stop_decoding(j)
        if self.B:
            self.fmax = max(e[0] for e in self.decoders.values())
        gen = jobs.n_out[j] - (f - self.N)
        jobs.generated[j] = gen
        t = jobs.n_in[j] + gen  # tokens it will re-prefill; the decode step at context t is replaced
        jobs.extra_prefill_tokens[j] += t
        jobs.extra_prefill_pairs[j] += t * (t + 1) / 2
        jobs.recomputed_steps[j] += 1
        jobs.recomputed_ctx[j] += t
        held = self._drop(j, ctx - 1)
        self.used -= held
        return need, held

    def _preempt_partial(self) -> int:
        """Preempt the prompt mid-prefill: its computed chunk is lost; returns the units it held."""
        assert self.partial is not None
        j, done, _ = self.partial
        self.partial = None
        self.jobs.extra_prefill_tokens[j] += done
        self.jobs.extra_prefill_pairs[j] += done * (done + 1) / 2
        held = 0 if self.reserve else self._drop(j, done)
        self.used -= held
        self.pending -= self.jobs.n_in[j] + self.jobs.n_out[j]
        return held

    def _requeue(self, j: int) -> None:
        """A preempted job goes back to the front of the queue."""
        jobs = self.jobs
        jobs.preemptions[j] += 1
        self.preemptions += 1
        jobs.share[j] += self.share + self.share_c
        if self.scheduler.requeue_front:
            self.queue.appendleft(j)
        else:
            self.queue.append(j)
        self.pending += jobs.n_in[j] + jobs.n_out[j]
        self._count_queued(j, 1)

    # --- prefix cache ------------------------------------------------------------------------
    def _blocks(self, j: int, tokens: int) -> list[int]:
        """Job j's prompt blocks within its first `tokens` tokens (none without a prefix cache)."""
        b = self.jobs.prefix
        if not self.pc or b is None:
            return []
        start = int(b.starts[j])
        n = min(int(b.counts[j]), self.jobs.n_in[j] // self.hb, tokens // self.hb)
        return b.ids[start : start + n].tolist()  # type: ignore[no-any-return]

    def _lookup(self, j: int, target: int) -> tuple[int, int]:
        """(leading blocks of job j found cached, of them idle) for a prefill to `target` tokens
        (its last token is always computed)."""
        hits = idle = 0
        for h in self._blocks(j, target - 1):
            if h not in self.blocks_cached:
                break
            hits += 1
            idle += h in self.idle_blocks
        return hits, idle

    def _take(self, j: int, hits: int) -> None:
        """Job j references its first `hits` blocks, found cached."""
        for h in self._blocks(j, hits * self.hb):
            self.idle_blocks.pop(h, None)
            self.blocks_cached[h] += 1
        self._refs[j] = hits
        h = hits * self.hb
        self.jobs.cached_tokens[j] += h
        self.jobs.cached_pairs[j] += h * (h + 1) / 2

    def _register(self, j: int) -> None:
        """Job j's prefill is done: its prompt's full blocks are cached (a block another job
        cached meanwhile is shared, j's own copy freed)."""
        blocks = self._blocks(j, self.jobs.n_in[j])
        for h in blocks[self._refs.get(j, 0) :]:
            if h in self.idle_blocks:
                del self.idle_blocks[h]  # the idle copy is used again, j's own is freed: no change in units
            elif h in self.blocks_cached:
                self.used -= self.bu  # shared with the sequences holding it: j's own copy is freed
            self.blocks_cached[h] = self.blocks_cached.get(h, 0) + 1
        if blocks:
            self._refs[j] = len(blocks)

    def _drop(self, j: int, tokens: int) -> int:
        """Job j, holding KV for `tokens` tokens, leaves: the units freed (its own, and the
        blocks no one references any more, which stay cached, idle, its last ones first)."""
        refs = self._refs.pop(j, 0)
        held = self.units(tokens) - refs * self.bu
        for h in reversed(self._blocks(j, refs * self.hb)):
            self.blocks_cached[h] -= 1
            if not self.blocks_cached[h]:
                self.idle_blocks[h] = None
                held += self.bu
        return held

    def _evict(self, free: int) -> None:
        """Evict idle blocks, least recently used first, until the rest fit in `free` units."""
        idle = self.idle_blocks
        while len(idle) * self.bu > free:
            h = next(iter(idle))
            del idle[h], self.blocks_cached[h]
            self.evicted += 1

    def cached_tokens(self, j: int) -> int:
        """Tokens of job j's prompt this replica holds cached, as an admission now would find them."""
        return self._lookup(j, self.jobs.n_in[j] + self.jobs.generated[j])[0] * self.hb

    def _head_idle(self) -> bool:
        """Whether the queue's head would find idle cached blocks (an eviction could change its admission)."""
        if not self.idle_blocks or not self.queue:
            return False
        j = self.queue[0]
        return self._lookup(j, self.jobs.n_in[j] + self.jobs.generated[j])[1] > 0

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
        shared = sum(1 for refs in self.blocks_cached.values() if refs)
        return sum(units - self._refs.get(j, 0) * self.bu for j, units in own.items()) + shared * self.bu

    @property
    def last_finish_steps(self) -> int:
        """Steps until the last decoder finishes (0: none decoding)."""
        return self.fmax - self.N if self.B else 0

    def outstanding_tokens(self) -> int:
        """Work left (tokens): n_in + n_out of queued and prefilling jobs, plus the outputs the
        decoders still owe."""
        return self.pending + self.fsum - self.B * self.N

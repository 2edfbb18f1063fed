"""Batch formation of one serving engine as plain Python: admission, KV accounting, preemption.

No SimPy and no costs here: `Engine` decides, at each step boundary, which sequences the next
step decodes and which prompt chunks it prefills; its state and the KV cache's books are
`sim.engine.state.EngineState`'s. The SimPy process (`sim.serving.server`) asks it for steps and
moves the clock.

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
phase; `span_limit` is the number of steps until the next completion, sliding-window saturation,
the first step whose blocks would not fit or an eviction from the prefix cache (when `pc`,
`sim.engine.prefix_cache`) that could change the queue head's admission.

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

from sim.engine.jobs import REJECT_KV, REJECT_TOKEN_BUDGET, REJECTED
from sim.engine.ledger import compensated_add
from sim.engine.state import EngineState

Prefill = list[tuple[int, int, int]]  # (job, chunk tokens, tokens of this prefill already computed)


class Engine(EngineState):
    """The rules of one replica's steps, over its batch and KV state (`EngineState`)."""

    __slots__ = ()  # EngineState's

    # --- queue -------------------------------------------------------------------------------
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

    # --- plain decode spans ------------------------------------------------------------------
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
        hits, idle = self.cache.lookup(j, target)
        past = hits * self.hb
        if target - past > budget:
            if not self.chunked:
                return False
            target = past + budget
        need = self.units(n_in + jobs.n_out[j]) if self.reserve else self.units(target) - (hits - idle) * self.bu
        return need + self.scheduler.reserve(self, j, target) <= free - self.scheduler.headroom(self)

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
            k = max(1, phases.steps_within(self.N, k, self.cap - self.used - len(self.cache.idle_blocks) * self.bu))
        if not phases.total or (self.cap - self.used) // phases.total * self._bs >= k:
            return k  # the cache holds whole cycles of allocations past k
        return phases.steps_within(self.N, k, self.cap - self.used)

    def run_span(self, steps: int, extra: float = 0.0) -> list[int]:
        """Advance the decoders `steps` plain decode steps whose energy differs from the
        coefficients' by `extra` step constants (a power cap's lower clock, `sim.kernel.costs`);
        returns the jobs that finished."""
        self.used += self.phases.over(self.N, steps)
        self.cache.evict(self.cap - self.used)
        self.share, self.share_c = compensated_add(self.share, self.share_c, (steps + extra) / self.B)
        n = self.N = self.N + steps
        self.S += self.B * steps
        if self._sat and self._sat[0][0] <= n:
            self._saturate()
        return self._complete() if self._heap[0][0] <= n else []

    # --- general steps: preemption, chunks, admission ----------------------------------------
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
        self.cache.evict(free - demand)  # the running sequences allocate first
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
            hits, idle = self.cache.lookup(j, target)
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
                self.cache.take(j, hits)
            self.cache.evict(free - taken)
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
            self.used -= self.cache.register(j)
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
        held = self.cache.drop(j, ctx - 1)
        self.used -= held
        return need, held

    def _preempt_partial(self) -> int:
        """Preempt the prompt mid-prefill: its computed chunk is lost; returns the units it held."""
        assert self.partial is not None
        j, done, _ = self.partial
        self.partial = None
        self.jobs.extra_prefill_tokens[j] += done
        self.jobs.extra_prefill_pairs[j] += done * (done + 1) / 2
        held = 0 if self.reserve else self.cache.drop(j, done)
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

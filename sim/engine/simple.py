"""The engine's rules, deliberately simple: one step at a time, every sum recomputed from each
sequence's own state. The test oracle (`server.exact_steps=True`) the compiled kernel is held to.

State is what a person would write down: the queue, the running sequences in admission order,
the prompt mid-prefill (if any), the tokens of KV each running sequence holds and, per job, the
output tokens it has generated (`JobTable`). KV is allocated when a step is formed: between
steps a decoder that has generated g tokens holds KV for n_in + g − 1 tokens, and its next decode
step reads a context of n_in + g and writes that token's (`oracle.features`). KV units
(`sim.engine.kv.KvLayout.units`) are summed over the running sequences whenever they are needed,
with the prefix cache's shared blocks counted once (`sim.engine.prefix_cache.PrefixCache`).
There are no decode spans, heaps, block phases or running sums here: those are the kernel's
(`sim.kernel`) and must give the same results.

One step (`form_step`, then `finish_step`):

1. The decoders each need the KV of one more token, the prompt mid-prefill its next chunk (as
   many tokens as the step's budget of `max_num_tokens` less one per decoder allows).
2. While that does not fit in the free KV (idle cached blocks count as free), the scheduler's
   victim is preempted by recomputation: its KV is freed and it goes back to the queue (front or
   end, by scheduler), to re-prefill its prompt and the tokens it had generated.
3. Idle cached blocks are evicted, least recently used first, until what remains fits.
4. Unless a prompt stays mid-prefill, or the step preempted and the scheduler does not admit
   then, waiting requests are admitted first come first served while a sequence slot, token
   budget and KV (less the scheduler's headroom and reserve) remain; each takes the longest
   cached run of its prompt's blocks and prefills the rest, in one chunk or (chunked prefill) in
   as much as the budget allows. A reserving scheduler takes n_in + n_out of KV at admission.
5. The step runs; each decoder emits a token, each completed prefill its first (or, after a
   preemption, its next) token and caches its prompt's blocks; sequences with all their output
   tokens leave, their KV freed (prompt blocks stay cached, idle once no one references them).

A request that could never be served (longer than the cache; without chunked prefill, a prompt
or recomputation over the token budget; a scheduler's own rule) is rejected on arrival.
"""

from __future__ import annotations

from sim.engine.jobs import DONE, REJECT_KV, REJECT_TOKEN_BUDGET, REJECTED, Prefill
from sim.engine.simple_state import SimpleState


class SimpleEngine(SimpleState):
    """The rules of one replica's steps, over its state (`SimpleState`), one step at a time."""

    # --- the queue --------------------------------------------------------------------------
    def enqueue(self, j: int) -> bool:
        """Queue job j, or reject it (status and reason set) if this engine can never serve it."""
        jobs = self.jobs
        n_in, n_out = jobs.n_in[j], jobs.n_out[j]
        longest = n_in + n_out if self.reserve else n_in + n_out - 1  # tokens of KV it will hold
        # A preempted request re-prefills its prompt and up to n_out − 1 generated tokens in one
        # step without chunked prefill, so that must fit the budget too.
        prefill = n_in if self.reserve else n_in + n_out - 1
        if longest > self.fit:
            jobs.status[j], jobs.reason[j] = REJECTED, REJECT_KV
            return False
        if not self.chunked and prefill > self.max_tokens:
            jobs.status[j], jobs.reason[j] = REJECTED, REJECT_TOKEN_BUDGET
            return False
        if self.scheduler.never_admitted(self, n_in, n_out):
            jobs.status[j], jobs.reason[j] = REJECTED, REJECT_KV
            return False
        self.queue.append(j)
        return True

    def _admission(self, j: int, budget: int) -> tuple[int, int, int, int] | None:
        """What admitting job j with `budget` tokens left takes: (chunk tokens, cached tokens,
        cached blocks, KV units it allocates), or None if its prompt must wait for a whole step."""
        jobs = self.jobs
        target = jobs.n_in[j] + jobs.generated[j]
        hits, idle = self.cache.lookup(j, target)
        past = hits * self.hb
        m = min(target - past, budget)
        if past + m < target and not self.chunked:
            return None
        if self.reserve:
            need = self.kv.units(jobs.n_in[j] + jobs.n_out[j])
        else:  # its own new blocks, and the idle cached blocks it takes back from the free memory
            need = self.kv.units(past + m) - (hits - idle) * self.bu
        return m, past, hits, need

    def _may_admit(self) -> bool:
        """Whether the batch has a slot for the queue's head at all."""
        return bool(self.queue) and len(self.order) < self.max_seqs and not (self.static and self.order)

    # --- a step -----------------------------------------------------------------------------
    def can_span(self) -> bool:
        """Whether the next step is a plain decode of the running decoders (nothing else changes)."""
        if not self.decoding or self.partial is not None:
            return False
        free = self.cap - self.used - self.step_need()
        if free < 0:
            return False
        budget = self.max_tokens - len(self.order)
        if not self._may_admit() or budget <= 0:
            return True
        a = self._admission(self.queue[0], budget)
        if a is None:
            return True
        m, past, _, need = a
        sched = self.scheduler
        return need + sched.reserve(self, self.queue[0], past + m) > free - sched.headroom(self)

    def span_limit(self) -> int:
        """Steps of plain decode from now: one (this engine never runs spans)."""
        return 1

    def form_step(self, now_s: float) -> Prefill:
        """Schedule the next step: preemptions, the prompt mid-prefill's chunk, admissions."""
        sched = self.scheduler
        budget = self.max_tokens - len(self.decoding)
        free = self.cap - self.used
        demand = self.step_need()
        part, m = self.partial, 0
        if part is not None:
            m = min(part[2] - part[1], budget)
            demand += self._grow(part[0], m)
        preempted = False
        while demand > free:
            v = sched.victim(self)
            preempted = True
            if part is not None and v == part[0]:
                demand -= self._grow(v, m)
                part, m = None, 0
            else:
                demand -= self._grow(v, 1)
                budget += 1
            free += self._preempt(v)
        if preempted:
            sched.preempted(self)
        for j in self.decoding:  # the running sequences allocate first
            self.held[j] += 1
        work: Prefill = []
        if part is not None and m > 0:
            work.append((part[0], m, part[1]))
            self.held[part[0]] += m
            budget -= m
        self.cache.evict(free - demand)
        settled = part is None or part[1] + m >= part[2]  # no admission beside a prompt left mid-prefill
        if self.queue and settled and (not preempted or sched.admit_after_preemption):
            self._admit(work, budget, free - demand, now_s)
        return work

    def _admit(self, work: Prefill, budget: int, free: int, now_s: float) -> None:
        """Admit waiting requests first come first served into `work`, within `free` KV units."""
        jobs, sched = self.jobs, self.scheduler
        if self.static and self.order:
            return  # static batching: a batch forms only on an empty server
        room = free - sched.headroom(self)  # KV units admissions may take or set aside
        taken = 0
        while self.queue and len(self.order) < self.max_seqs and budget > 0:
            j = self.queue[0]
            a = self._admission(j, budget)
            if a is None:
                break
            m, past, hits, need = a
            aside = sched.reserve(self, j, past + m)
            if need + aside > room - taken:
                break
            room -= aside
            self.queue.popleft()
            self.order[j] = None
            self.held[j] = past + m
            budget -= m
            taken += need
            work.append((j, m, past))
            if hits:
                self.cache.take(j, hits)
            self.cache.evict(free - taken)
            if jobs.chunks[j] == 0:
                jobs.admit_s[j] = now_s

    def _preempt(self, j: int) -> int:
        """Preempt running sequence j by recomputation; returns the KV units this frees."""
        jobs = self.jobs
        del self.order[j]
        held = self.held.pop(j)
        if self.partial is not None and self.partial[0] == j:
            done = self.partial[1]  # the chunks computed are lost
            self.partial = None
            jobs.extra_prefill_tokens[j] += done
            jobs.extra_prefill_pairs[j] += done * (done + 1) / 2
        else:  # it re-prefills its prompt and the tokens it generated, replacing one decode step
            del self.decoding[j]
            t = jobs.n_in[j] + jobs.generated[j]
            jobs.extra_prefill_tokens[j] += t
            jobs.extra_prefill_pairs[j] += t * (t + 1) / 2
            jobs.recomputed_steps[j] += 1
            jobs.recomputed_ctx[j] += t
        freed = 0 if self.reserve else self.cache.drop(j, held)  # a reserving engine never preempts
        jobs.preemptions[j] += 1
        self.preemptions += 1
        if self.scheduler.requeue_front:
            self.queue.appendleft(j)
        else:
            self.queue.append(j)
        return freed

    def run_span(self, steps: int, extra: float = 0.0) -> list[int]:
        """Run one plain decode step (`steps` must be 1); returns the jobs that finished."""
        assert steps == 1, "the simple engine runs one step at a time"
        for j in self.decoding:
            self.held[j] += 1
        self.cache.evict(self.cap - self.used)
        return self.finish_step([], extra)[1]

    def finish_step(self, work: Prefill, extra: float = 0.0) -> tuple[list[int], list[int]]:
        """Close a step that decoded the decoders and prefilled `work`: (first tokens, finished).
        `extra` (the step constants a power cap's lower clock changed) is the interface's: the
        exact-steps mode charges each sequence its energy as the step is priced
        (`sim.serving.steps.Steps.exact_step`)."""
        jobs = self.jobs
        self.N += 1
        done = []
        for j in sorted(self.decoding):  # each emits a token; those with all their tokens leave
            jobs.generated[j] += 1
            if jobs.generated[j] == jobs.n_out[j]:
                self._finish(j)
                done.append(j)
        first: list[int] = []
        self.prefilled = 0
        for j, m, past in work:
            jobs.chunks[j] += 1
            target = jobs.n_in[j] + jobs.generated[j]
            if past + m < target:
                self.partial = (j, past + m, target)
                continue
            if self.partial is not None and self.partial[0] == j:
                self.partial = None
            self.prefilled += 1
            self.cache.register(j)
            if jobs.generated[j] == 0:
                first.append(j)
            jobs.generated[j] += 1
            if jobs.generated[j] == jobs.n_out[j]:
                self._finish(j)
                done.append(j)
            else:
                self.decoding[j] = None
        return first, done

    def _finish(self, j: int) -> None:
        """Job j has all its tokens: it leaves, freeing its KV."""
        del self.order[j]
        self.decoding.pop(j, None)
        kv_tokens = self.held.pop(j)
        if not self.reserve:
            self.cache.drop(j, kv_tokens)
        self.jobs.status[j] = DONE

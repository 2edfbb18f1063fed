"""One serving engine on one GPU as a SimPy process: iteration-level batching, closed-form spans.

Each step decodes one token for every running sequence and prefills newly admitted prompts,
within `max_batch_size` sequences and `max_num_tokens` tokens (chunked prefill optional). FCFS
admission reserves a request's full n_in + n_out KV tokens and never evicts (TensorRT-LLM's
guaranteed-no-evict scheduler); a request that can never fit is rejected.

Only batch-changing events wake the process: a step that prefills, the next completion, and an
arrival that could be admitted. Between them the decoders advance k steps at once; their time
and energy are arithmetic series (`sim.costs.span`). Per-request state is the finish step of a
heap entry; a request's shared-cost share is the difference of one running sum taken at its
admission and at its finish. `exact_steps=True` runs one step per event and charges every
sequence explicitly: the reference the fast mode is tested against.

Convention (oracle.features): the prefill step emits the first token; decode step k = 1…n_out−1
reads a context of n_in + k tokens.
"""

from __future__ import annotations

import heapq
from array import array
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from sim.config import ServerConfig
from sim.costs import StepCosts, mixed_step, span, steps_to_reach
from sim.jobs import DONE, REJECTED, JobTable, ServerState

Callback = Callable[[int, float], None]
RECENT = 0.95  # weight of the past in the moving averages of step time and TTFT, per step / request
Prefill = list[tuple[int, int, int]]  # (job, chunk tokens, tokens already cached)


@dataclass(frozen=True)
class ServerStats:
    """A server's activity: busy time (s), step energy (J), and its spans (one row per event)."""

    name: str
    pool: str
    idle_power_w: float
    kv_capacity_tokens: int
    steps: int
    busy_s: float
    active_energy_j: float
    peak_power_w: float
    span_start_s: np.ndarray
    span_s: np.ndarray
    span_energy_j: np.ndarray
    span_peak_w: np.ndarray  # highest step power within each span (W)
    span_steps: np.ndarray  # steps in each span
    span_running: np.ndarray  # sequences in each step of the span (decoding + prefilling)
    span_tokens: np.ndarray  # output tokens emitted in the span (first tokens included)


class Server:
    """A GPU serving one model; jobs come from a pre-sorted `feed` and/or `submit` (a router)."""

    def __init__(
        self,
        env: simpy.Environment,
        costs: StepCosts,
        config: ServerConfig,
        jobs: JobTable,
        kv_capacity_tokens: int,
        *,
        index: int = 0,
        name: str = "server",
        pool: str = "main",
        on_finish: Callback | None = None,
        on_reject: Callback | None = None,
    ) -> None:
        self.env, self.costs, self.config, self.jobs = env, costs, config, jobs
        self.index, self.name, self.pool = index, name, pool
        self.kv_capacity_tokens = int(kv_capacity_tokens)
        self.on_finish, self.on_reject = on_finish, on_reject
        self._ct, self._ce = costs.time_s, costs.energy_j
        self._max_tokens = config.max_num_tokens or 1 << 62
        self._static = config.mode == "static"
        self._ftimes: list[float] = []
        self._fjobs: list[int] = []
        self._fi = 0
        self._queue: deque[int] = deque()
        self._heap: list[tuple[int, int]] = []  # (finish step, job) of decoding sequences
        self._partial: tuple[int, int] | None = None  # (job, prompt tokens done) mid-prefill
        self._B = self._S = self._kv = self._N = 0  # decoders, Σ their context, KV used, steps
        self._pending = 0  # Σ n_in + n_out of jobs queued or prefilling (tokens)
        self._q_need = self._q_prompt = 0  # Σ n_in + n_out and Σ n_in of the queue (tokens)
        self._fsum = self._fmax = 0  # Σ and max of the decoders' finish steps
        self._step_avg = self._ttft_avg = 0.0  # recent step time and TTFT (s), moving averages
        self._t = self._tc = 0.0  # clock (s), with its Neumaier compensation
        self._g = self._gc = 0.0  # Σ 1/(sequences in step), with its compensation
        self._waiting = self._interrupted = self._idle = False
        self._log_t, self._log_dt, self._log_e, self._log_p = array("d"), array("d"), array("d"), array("d")
        self._log_k, self._log_run, self._log_tok = array("q"), array("q"), array("q")
        self._peak_w = 0.0
        self._proc = env.process(self._run())

    # --- inputs ------------------------------------------------------------------------
    def feed(self, times_s: Sequence[float] | np.ndarray, jobs: Sequence[int] | np.ndarray) -> None:
        """Jobs arriving at known times (s, sorted), read as the clock passes them (no events).

        Call before the environment runs.
        """
        times, ids = np.asarray(times_s, dtype=float), np.asarray(jobs, dtype=np.int64)
        if times.shape != ids.shape or np.any(np.diff(times) < 0):
            raise ValueError("a feed needs as many sorted arrival times as jobs")
        self._ftimes, self._fjobs, self._fi = times.tolist(), ids.tolist(), 0

    def submit(self, job: int, t_s: float | None = None) -> None:
        """Hand a job to the server at time t_s (default: now); wakes it if it can start it."""
        t = self.env.now if t_s is None else t_s
        self._pull(t)
        was_empty = not self._queue
        if not self._enqueue(job, t) or not self._waiting or self._interrupted:
            return
        room = was_empty and not self._static and self._B + (self._partial is not None) < (self.config.max_batch_size)
        if self._idle or room:
            self._interrupted = True
            self._proc.interrupt(t)

    def state(self) -> ServerState:
        """Snapshot for policies and routers, as of the last step boundary (running counts
        decoders and a prompt mid-prefill)."""
        running = self._B + (self._partial is not None)
        return ServerState(
            self.env.now,
            len(self._queue),
            running,
            self.kv_capacity_tokens - self._kv,
            decoders=self._B,
            decode_ctx=self._S,
            outstanding_tokens=self.outstanding_tokens(),
            queued_kv_tokens=self._q_need,
            queued_prompt_tokens=self._q_prompt,
            next_finish_steps=self._heap[0][0] - self._N if self._heap else 0,
            last_finish_steps=self._fmax - self._N if self._heap else 0,
            recent_step_s=self._step_avg,
            recent_ttft_s=self._ttft_avg,
        )

    def outstanding_tokens(self) -> int:
        """Work left (tokens): n_in + n_out of queued and prefilling jobs, plus the output tokens
        the decoders still have to emit (as of the last step boundary)."""
        return self._pending + self._fsum - self._B * self._N

    def stats(self) -> ServerStats:
        """Totals and span log so far."""
        e = np.frombuffer(self._log_e, dtype=float).copy()
        dt = np.frombuffer(self._log_dt, dtype=float).copy()
        return ServerStats(
            self.name,
            self.pool,
            self.costs.idle_power_w,
            self.kv_capacity_tokens,
            self._N,
            float(np.sum(dt)),
            float(np.sum(e)),
            self._peak_w,
            np.frombuffer(self._log_t, dtype=float).copy(),
            dt,
            e,
            np.frombuffer(self._log_p, dtype=float).copy(),
            np.frombuffer(self._log_k, dtype=np.int64).copy(),
            np.frombuffer(self._log_run, dtype=np.int64).copy(),
            np.frombuffer(self._log_tok, dtype=np.int64).copy(),
        )

    def _enqueue(self, job: int, t: float) -> bool:
        jobs = self.jobs
        jobs.arrival_s[job] = t
        jobs.server[job] = self.index
        n_in, need = jobs.n_in[job], jobs.n_in[job] + jobs.n_out[job]
        if need > self.kv_capacity_tokens or (not self.config.chunked_prefill and n_in > self._max_tokens):
            jobs.status[job] = REJECTED
            if self.on_reject is not None:
                self.on_reject(job, t)
            return False
        self._queue.append(job)
        self._pending += need
        self._q_need += need
        self._q_prompt += n_in
        return True

    def _pull(self, limit: float) -> None:
        """Move feed arrivals up to time `limit` into the queue."""
        ft, i, n = self._ftimes, self._fi, len(self._ftimes)
        while i < n and ft[i] <= limit:
            self._enqueue(self._fjobs[i], ft[i])
            i += 1
        self._fi = i

    # --- the process --------------------------------------------------------------------
    def _run(self) -> Generator[Any, Any, None]:
        while True:
            self._pull(self._t + self._tc)
            work = self._admit()
            if work:
                yield from self._mixed(work)
            elif self._B:
                yield from self._decode()
            else:
                yield from self._wait_idle()

    def _sleep(self, until: float | None) -> Generator[Any, Any, float | None]:
        """Sleep to clock time `until` (None: until woken); returns the waking submit's time."""
        env = self.env
        self._waiting = True
        try:
            if until is None:
                yield env.event()
            else:
                yield env.timeout(max(until - env.now, 0.0))
            woke = None
        except simpy.Interrupt as interrupt:
            woke = interrupt.cause
        self._waiting = self._interrupted = False
        return woke

    def _advance(
        self, dt: float, de: float, steps: int, share: float, peak_w: float, running: int, tokens: int
    ) -> None:
        """Move the clock and the running sums past `steps` steps taking dt s and de J, with
        `running` sequences per step emitting `tokens` output tokens in all."""
        t = self._t
        u = t + dt
        self._tc += (t - u) + dt if t >= dt else (dt - u) + t
        self._t = u
        g = self._g
        v = g + share
        self._gc += (g - v) + share if g >= share else (share - v) + g
        self._g = v
        self._N += steps
        self._S += self._B * steps
        self._log_t.append(t + self._tc)
        self._log_dt.append(dt)
        self._log_e.append(de)
        self._log_p.append(peak_w)
        self._log_k.append(steps)
        self._log_run.append(running)
        self._log_tok.append(tokens)
        self._step_avg += (1.0 - RECENT**steps) * (dt / steps - self._step_avg)
        if peak_w > self._peak_w:
            self._peak_w = peak_w

    def _wait_idle(self) -> Generator[Any, Any, None]:
        self._idle = True
        nxt = self._ftimes[self._fi] if self._fi < len(self._ftimes) else None
        woke = yield from self._sleep(nxt)
        self._idle = False
        start = woke if woke is not None else nxt
        assert start is not None
        if start > self._t + self._tc:
            self._t, self._tc = start, 0.0
        self._pull(start)

    # --- admission and prefill steps ---------------------------------------------------
    def _admit(self) -> Prefill:
        """FCFS admissions at a step boundary: this step's prefill work."""
        jobs, budget, work = self.jobs, self._max_tokens - self._B, []
        if self._partial is not None:
            j, done = self._partial
            m = min(jobs.n_in[j] - done, budget)
            work.append((j, m, done))
            budget -= m
        if self._static and (self._B or work):
            return work
        q, running, cap = self._queue, self._B + len(work), self.config.max_batch_size
        n_in, n_out, t = jobs.n_in, jobs.n_out, self._t + self._tc
        while q and running < cap and budget > 0:
            j = q[0]
            need, m = n_in[j] + n_out[j], n_in[j]
            if self._kv + need > self.kv_capacity_tokens:
                break
            if m > budget:
                if not self.config.chunked_prefill:
                    break
                m = budget
            q.popleft()
            self._q_need -= need
            self._q_prompt -= n_in[j]
            self._kv += need
            running += 1
            budget -= m
            work.append((j, m, 0))
            jobs.admit_s[j] = t
            jobs.share[j] = -(self._g + self._gc)
        return work

    def _mixed(self, work: Prefill) -> Generator[Any, Any, None]:
        """One step that prefills `work` (and decodes the running sequences)."""
        if self.config.exact_steps:
            dt, de = self._exact_step(work)
        else:
            dt = mixed_step(self._ct, self._B, self._S, work)
            de = mixed_step(self._ce, self._B, self._S, work)
        end = self._t + self._tc + dt
        while (yield from self._sleep(end)) is not None:
            pass  # a step is atomic: arrivals wait for its end
        done = sum(1 for j, m, past in work if past + m >= self.jobs.n_in[j])
        self._advance(dt, de, 1, 1.0 / (self._B + len(work)), _power(de, dt), self._B + len(work), self._B + done)
        self._prefilled(work)
        self._complete()

    def _prefilled(self, work: Prefill) -> None:
        jobs, t = self.jobs, self._t + self._tc
        self._partial = None
        for j, m, past in work:
            jobs.chunks[j] += 1
            if past + m < jobs.n_in[j]:
                self._partial = (j, past + m)
                continue
            jobs.first_s[j] = t
            self._ttft_avg += (1.0 - RECENT) * (t - jobs.arrival_s[j] - self._ttft_avg)
            n_out = jobs.n_out[j]
            self._pending -= jobs.n_in[j] + n_out
            if n_out == 1:
                self._finish(j, t)
                continue
            f = self._N + n_out - 1
            heapq.heappush(self._heap, (f, j))
            self._fsum += f
            if f > self._fmax or self._B == 0:
                self._fmax = f
            self._B += 1
            self._S += jobs.n_in[j] + 1

    # --- decode spans -----------------------------------------------------------------
    def _decode(self) -> Generator[Any, Any, None]:
        """Advance the decoders to the next completion or the first boundary after an arrival."""
        B, S, ct = self._B, self._S, self._ct
        t0 = self._t + self._tc
        if self.config.exact_steps:
            k = 1
        else:
            k = self._heap[0][0] - self._N
            if not self._queue and not self._static and B < self.config.max_batch_size:
                if self._fi < len(self._ftimes):
                    k = min(k, steps_to_reach(ct, B, S, self._ftimes[self._fi] - t0))
        while True:
            woke = yield from self._sleep(t0 + span(ct, B, S, k))
            if woke is None:
                break
            k = min(k, steps_to_reach(ct, B, S, woke - t0))
        if self.config.exact_steps:
            dt, de = self._exact_step([])
            self._advance(dt, de, 1, 1.0 / B, _power(de, dt), B, B)
        else:
            self._advance_span(k)
        self._complete()

    def _advance_span(self, k: int) -> None:
        B, S, ct, ce = self._B, self._S, self._ct, self._ce
        dt, de = span(ct, B, S, k), span(ce, B, S, k)
        last = S + (k - 1) * B  # step power is monotone in k: the peak is at an end
        p_first = _power(span(ce, B, S, 1), span(ct, B, S, 1))
        p_last = _power(span(ce, B, last, 1), span(ct, B, last, 1))
        self._advance(dt, de, k, k / B, max(p_first, p_last), B, B * k)

    def _complete(self) -> None:
        heap, n, t = self._heap, self._N, self._t + self._tc
        n_in, n_out = self.jobs.n_in, self.jobs.n_out
        while heap and heap[0][0] == n:
            j = heapq.heappop(heap)[1]
            self._fsum -= n
            self._B -= 1
            self._S -= n_in[j] + n_out[j]
            self._finish(j, t)

    def _finish(self, j: int, t: float) -> None:
        jobs = self.jobs
        jobs.finish_s[j] = t
        jobs.share[j] += self._g + self._gc
        jobs.status[j] = DONE
        self._kv -= jobs.n_in[j] + jobs.n_out[j]
        if self.on_finish is not None:
            self.on_finish(j, t)

    # --- the reference: one step, every sequence charged explicitly ---------------------
    def _exact_step(self, work: Prefill) -> tuple[float, float]:
        """Features of the coming step from each sequence's own state; charges each its energy."""
        jobs, step, ce = self.jobs, self._N + 1, self._ce
        dec = [(j, jobs.n_in[j] + jobs.n_out[j] - 1 - (f - step)) for f, j in self._heap]
        ctx = sum(c for _, c in dec)
        assert ctx == self._S, "incremental context sum diverged from the explicit one"
        share = ce[0] / (len(dec) + len(work))
        for j, c in dec:
            jobs.energy_j[j] += ce[1] + ce[2] * c + share
        for j, m, past in work:
            attn = m * past + m * (m + 1) // 2
            jobs.energy_j[j] += ce[3] + ce[4] * m + ce[5] * attn + share
        return mixed_step(self._ct, len(dec), ctx, work), mixed_step(ce, len(dec), ctx, work)


def _power(energy_j: float, time_s: float) -> float:
    """Mean power (W) of a step; 0 for a step the oracle says takes no time."""
    return energy_j / time_s if time_s > 0.0 else 0.0

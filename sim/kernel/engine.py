"""`KernelEngine`: a server's engine interface over a compiled `Replica`, so that the SimPy process
(`sim.serving.server.Server` in the fast mode: dynamic policies, summaries, closed loops, recorded
step features, users' own SimPy processes) runs the kernel's rules, not copies of them. Each call
is one compiled call; `sim.engine.simple.SimpleEngine`, with the same interface, is the
deliberately simple reference the exact-steps mode runs.

The same `Replica` serves the compiled loops when its server is fed alone (`sim.kernel.replica`)
or routed (`sim.kernel.fleet`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from sim.config import ServerConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import JobTable
from sim.engine.kv import KvLayout
from sim.engine.settings import prefix_settings, settings
from sim.kernel import admission, announce_compiling, decoding, hooks, prefix, state

SPAN_ROWS = 1024  # span rows a replica buffers in the compiled loops before they move to its ledger


_AT = {name: i for i, name in enumerate(state.COUNTERS)}  # a counter's place in `state.counters`


def _counter(name: str, doc: str) -> property:
    """A read-only property of the compiled replica's counter `name`."""
    at = _AT[name]
    return property(lambda self: self.counters[at], doc=doc)


class KernelEngine:
    """A replica's batch and KV state in a compiled `Replica` (`r`), with `SimpleEngine`'s methods."""

    def __init__(self, jobs: JobTable, config: ServerConfig, kv: KvLayout, costs: StepCosts) -> None:
        announce_compiling()
        self.jobs, self.config, self.kv = jobs, config, kv
        self.scheduler = config.make_scheduler()
        s = settings(self.scheduler, config, kv) | self.scheduler.kernel_settings()
        s["hooks"] = hooks.code(self.scheduler)
        s |= {"bs": kv.block_size, "full": kv.full_units, "wunits": kv.window_units, "wblocks": kv.window_blocks}
        s["sunits"] = kv.state_units
        s |= {"limit": costs.power_limit_w or 0.0, "tau": costs.step_budget_s, "switch": costs.switch_s}
        s |= prefix_settings(self.scheduler, config, kv, jobs)
        self.static, self.max_seqs = bool(s["static"]), int(s["max_seqs"])
        seqs = max(1, min(config.max_batch_size, len(jobs)))
        self.r = state.new_replica(
            np.array([int(s.get(k, 0)) for k in state.INT_SETTINGS], dtype=np.int64),
            np.array([float(s.get(k, 0.0)) for k in state.FLOAT_SETTINGS]),
            np.array(s["hook_i"], dtype=np.int64).reshape(-1),
            np.array(s["hook_f"], dtype=float).reshape(-1),
            costs.ladder_t,
            costs.ladder_e,
            seqs,
            4 * seqs + 4,  # preemption-log rows (`state.log_full`)
            SPAN_ROWS,
            job_columns(jobs),
            job_links(jobs),
            job_prefix(jobs),
            np.zeros(0),
            np.zeros(0, np.int64),
        )

    # --- the engine interface (`SimpleEngine`'s) --------------------------------------------
    def enqueue(self, j: int) -> bool:
        """Queue job j, or reject it (status and reason set) if this engine can never serve it."""
        return bool(admission.enqueue(self.r, j))

    def can_span(self) -> bool:
        """Whether the next step is a plain decode of the running decoders."""
        return bool(admission.can_span(self.r))

    def accepts_arrivals(self) -> bool:
        """Whether an arrival now could join the next step."""
        return bool(admission.accepts_arrivals(self.r))

    def span_limit(self) -> int:
        """Steps of plain decode from now: to the next completion, window saturation or KV shortage."""
        return int(decoding.span_limit(self.r))

    def run_span(self, steps: int, extra: float = 0.0) -> list[int]:
        """Advance the decoders `steps` plain decode steps (energy `extra` step constants off the
        coefficients', `sim.kernel.costs`); returns the jobs that finished."""
        decoding.run_span(self.r, steps, extra)
        return _done(self.r).tolist()  # type: ignore[no-any-return]

    def form_step(self, now_s: float) -> list[tuple[int, int, int]]:
        """Schedule the next step; returns its prefill work (job, chunk tokens, tokens computed)."""
        admission.form_step(self.r, now_s)
        take_log(self.jobs, self.r)
        j, m, past = _work(self.r)
        return list(zip(j.tolist(), m.tolist(), past.tolist(), strict=True))

    def finish_step(self, work: list[tuple[int, int, int]], extra: float = 0.0) -> tuple[list[int], list[int]]:
        """Close the step `form_step` formed (its `work`; energy `extra` step constants off the
        coefficients'): (first tokens, finished)."""
        decoding.finish_step(self.r, extra)
        first, done = _first_done(self.r)
        return first.tolist(), done.tolist()

    def cached_tokens(self, j: int) -> int:
        """Tokens of job j's prompt this replica holds cached, as an admission now would find them."""
        return int(_cached_tokens(self.r, j))

    def outstanding_tokens(self) -> int:
        """Work left (tokens): queued and prefilling jobs' n_in + n_out, the decoders' outputs owed."""
        c = self.counters
        return c[_AT["pending"]] + c[_AT["fsum"]] - c[_AT["B"]] * c[_AT["N"]]

    # --- counters (`state.COUNTERS`), read as of the last call ---------------------------
    @property
    def counters(self) -> tuple[Any, ...]:
        return state.counters(self.r)  # type: ignore[no-any-return]

    B = _counter("B", "decoders")
    N = _counter("N", "steps run")
    S = _counter("S", "Σ the decoders' contexts at the next step (tokens)")
    used = _counter("used", "KV units held")
    queued_need = _counter("queued_need", "Σ n_in + n_out of the queue (tokens)")
    queued_prompt = _counter("queued_prompt", "Σ n_in of the queue (tokens)")
    preemptions = _counter("preemptions", "preemptions so far")
    prefilled = _counter("prefilled", "prompts the last step finished prefilling")
    queue_len = _counter("queue_len", "queued jobs")
    running = _counter("running", "running sequences (decoders and a prompt mid-prefill)")

    @property
    def cap(self) -> int:
        """KV units of the cache."""
        return self.kv.capacity_units

    @property
    def last_finish_steps(self) -> int:
        """Steps until the last decoder finishes (0: none decoding)."""
        c = self.counters
        return c[_AT["fmax"]] - c[_AT["N"]] if c[_AT["B"]] else 0

    def busy(self) -> bool:
        """Whether a step has work: decoders, a prompt mid-prefill or a queue."""
        return bool(admission.busy(self.r))


def take_log(jobs: JobTable, r: state.Replica) -> None:
    """Add the kernel's logged preemptions to the job table's per-job counters; clear the log."""
    plog = _log(r)
    for j, kind, tokens in plog.tolist():
        if kind == state.REQUEUE:
            jobs.preemptions[j] += 1
            continue
        jobs.extra_prefill_tokens[j] += tokens  # re-prefilled (a decoder) or thrown away (a partial prompt)
        jobs.extra_prefill_pairs[j] += tokens * (tokens + 1) / 2
        if kind == state.DECODER:  # its re-prefill replaces the decode step at that context
            jobs.recomputed_steps[j] += 1
            jobs.recomputed_ctx[j] += tokens


def job_links(jobs: JobTable) -> tuple[np.ndarray, ...]:
    """The per-job arrays the kernel links jobs through (nxt, prv, decoder slot), one set per job
    table, shared by its replicas (a job is in one replica at a time): 12 bytes a job."""
    links = jobs.kernel_links
    if links is None:
        links = jobs.kernel_links = tuple(np.full(len(jobs), -1, np.int32) for _ in range(3))
    return links


def job_prefix(jobs: JobTable) -> tuple[Any, ...]:
    """The jobs' prompt blocks as the kernel reads them (`state.new_replica`'s `prefix`): block
    start, count and ids, the blocks each job references (shared by the replicas, as the links)
    and its cached tokens and their attention pairs; empty arrays when the jobs have none."""
    blocks = jobs.prefix
    if blocks is None:
        none = np.zeros(0, np.int32)
        return np.zeros(0, np.int64), none, none, none, jobs.cached_tokens, jobs.cached_pairs, 0
    if blocks.refs is None:
        blocks.refs = np.zeros(len(jobs), np.int32)
    cached = jobs.cached_tokens, jobs.cached_pairs
    return blocks.starts, blocks.counts, blocks.ids, blocks.refs, *cached, blocks.unique


def job_columns(jobs: JobTable) -> tuple[np.ndarray, ...]:
    """The job table's columns the kernel reads and writes, as numpy views of its buffers."""
    as32 = [np.frombuffer(a, dtype=np.int32) for a in (jobs.n_in, jobs.n_out, jobs.generated)]
    return (*as32, jobs.share, jobs.status, jobs.reason, jobs.first_s, jobs.finish_s, jobs.admit_s, jobs.chunks)


@njit(cache=True)
def _cached_tokens(r, j):  # type: ignore[no-untyped-def]
    return prefix.lookup(r, j, r.n_in[j] + r.generated[j])[0] * r.hb


@njit(cache=True)
def _done(r):  # type: ignore[no-untyped-def]
    return r.done[: r.ndone].copy()


@njit(cache=True)
def _first_done(r):  # type: ignore[no-untyped-def]
    return r.first[: r.nfirst].copy(), r.done[: r.ndone].copy()


@njit(cache=True)
def _work(r):  # type: ignore[no-untyped-def]
    n = r.nwork
    return r.work_j[:n].copy(), r.work_m[:n].copy(), r.work_past[:n].copy()


@njit(cache=True)
def _log(r):  # type: ignore[no-untyped-def]
    out = r.plog[: r.nlog].copy()
    r.nlog = 0
    return out

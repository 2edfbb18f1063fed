"""The energy (J) charged to each job, the part of it that is the job's own prefill, and the
prefill the prefix cache spared it, from the served job table and each server's step costs.

Per job, at the coefficients of the server that ran it: in the fast mode its own sequence terms,
its share of the steps' constants and what preemptions added, in the exact mode what the engine
charged step by step. The per-request records (`sim.results.records`) add up a user's jobs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sim.engine.costs import StepCoef, StepCosts, prefill_cost, recompute_cost, request_energy_j
from sim.engine.jobs import DONE, JobTable


def job_energy_j(
    jobs: JobTable,
    costs: Sequence[StepCosts],
    exact: bool,
    ids: np.ndarray | None = None,
    saved: np.ndarray | None = None,
) -> np.ndarray:
    """Energy (J) charged to jobs `ids` (default: all; 0 for jobs not served).

    Fast mode: own sequence costs plus share × the step constant of the job's server, plus what
    preemptions added (recomputed prefills less the decode steps they replaced), less the prefill
    of the prompt tokens found in the prefix cache (`saved`: `cache_saved_j` of `ids`, computed
    here if not given). Exact mode: what the engine accumulated step by step.
    """
    ids = np.arange(len(jobs)) if ids is None else ids
    done = jobs.status[ids] == DONE
    if exact:
        return np.where(done, jobs.energy_j.dense(ids), 0.0)
    n_in, n_out = jobs.lengths_of(ids)
    server, chunks, share = jobs.server[ids], jobs.chunks[ids], jobs.share[ids]
    preempted = jobs.preemptions.dense(ids, np.int32) > 0
    out = np.where(done, -(cache_saved_j(jobs, costs, ids) if saved is None else saved), 0.0)
    for index, c in enumerate(costs):
        m = (server == index) & done
        out[m] += request_energy_j(c.energy_j, n_in[m], n_out[m], chunks[m], share[m])
        extra = m & preempted
        if extra.any():
            e = ids[extra]
            out[extra] += recompute_cost(
                c.energy_j,
                jobs.extra_prefill_tokens.dense(e, np.int64),
                jobs.extra_prefill_pairs.dense(e),
                jobs.recomputed_steps.dense(e, np.int32),
                jobs.recomputed_ctx.dense(e, np.int64),
            )
    return out


def prefill_energy_j(jobs: JobTable, costs: Sequence[StepCosts], ids: np.ndarray, saved: np.ndarray) -> np.ndarray:
    """Energy (J) of the done jobs `ids`' own prefill terms: per chunk, per prompt token and per
    attention pair, the prompt tokens preemptions made prefill again included and those found in
    the prefix cache (`saved`: `cache_saved_j` of `ids`) left out, at their server's coefficients
    (the rest of a job's charge is its decode terms and its share of the steps' constants, which
    also carries what a power cap's lower clock changed in a throttled step's energy)."""
    out = np.zeros(ids.size)
    done, server = jobs.status[ids] == DONE, jobs.server[ids]
    n_in = jobs.lengths_of(ids)[0].astype(float)
    extra, pairs = jobs.extra_prefill_tokens.dense(ids, np.int64), jobs.extra_prefill_pairs.dense(ids)
    for index, c in enumerate(costs):
        m = done & (server == index)
        if m.any():
            k = StepCoef.of(c.energy_j)
            own = k.prefill_seqs * jobs.chunks[ids][m] + prefill_cost(k, n_in[m], n_in[m] * (n_in[m] + 1) / 2)
            out[m] = own + prefill_cost(k, extra[m], pairs[m])
    return out - np.where(done, saved, 0.0)


def cache_saved_j(jobs: JobTable, costs: Sequence[StepCosts], ids: np.ndarray) -> np.ndarray:
    """Energy (J) of the prefill that the prefix cache spared jobs `ids`: their cached prompt
    tokens and attention pairs at their server's coefficients (0 for jobs without hits)."""
    out = np.zeros(ids.size)
    cached, server = jobs.cached_tokens[ids], jobs.server[ids]
    hit = cached > 0
    for index, c in enumerate(costs):
        m = hit & (server == index)
        if m.any():
            out[m] = prefill_cost(StepCoef.of(c.energy_j), cached[m], jobs.cached_pairs[ids[m]])
    return out

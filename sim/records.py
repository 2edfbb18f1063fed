"""Per-request records: the job table folded back onto the user's requests.

A user's request is its main job plus, if a policy summarised its prompt, the summarization job.
Latencies run from the user's arrival; energies (J) add both jobs' charges.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from sim.costs import StepCosts, recompute_cost, request_energy_j
from sim.jobs import DONE, REJECT_REASONS, JobTable


def job_energy_j(jobs: JobTable, costs: Sequence[StepCosts], exact: bool) -> np.ndarray:
    """Energy (J) charged to every job (0 for jobs not served).

    Fast mode: own sequence costs plus share × the step constant of the job's server, plus what
    preemptions added (recomputed prefills less the decode steps they replaced). Exact mode: what
    the engine accumulated step by step.
    """
    if exact:
        return np.where(jobs.status == DONE, jobs.energy_j, 0.0)
    n_in, n_out = jobs.lengths()
    out = np.zeros(len(jobs))
    for index, c in enumerate(costs):
        m = (jobs.server == index) & (jobs.status == DONE)
        out[m] = request_energy_j(c.energy_j, n_in[m], n_out[m], jobs.chunks[m], jobs.share[m])
        extra = m & (jobs.preemptions > 0)
        if extra.any():
            out[extra] += recompute_cost(
                c.energy_j,
                jobs.extra_prefill_tokens[extra],
                jobs.extra_prefill_pairs[extra],
                jobs.recomputed_steps[extra],
                jobs.recomputed_ctx[extra],
            )
    return out


_REASONS = [REJECT_REASONS[k] for k in sorted(REJECT_REASONS)]


def request_records(
    jobs: JobTable,
    arrival_s: np.ndarray,
    n_in: np.ndarray,
    n_out: np.ndarray,
    parents: np.ndarray,
    costs: Sequence[StepCosts],
    exact: bool,
) -> pd.DataFrame:
    """One row per user request (trace order): lengths asked and served, times (s), energy (J)."""
    n = arrival_s.size
    energy = job_energy_j(jobs, costs, exact)
    served_in, served_out = (a[:n] for a in jobs.lengths())
    summary_energy = np.zeros(n)
    summary_energy[parents] = energy[n + np.arange(parents.size)]
    summary_tokens = np.zeros(n, dtype=np.int64)
    summary_tokens[parents] = jobs.n_out[n:]
    done = jobs.status[:n] == DONE
    first, finish = jobs.first_s[:n], jobs.finish_s[:n]
    start = jobs.admit_s[:n].copy()
    start[parents] = jobs.admit_s[n:]
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(served_out > 1, (finish - first) / (served_out - 1), np.nan)
    frame = pd.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": arrival_s,
            "n_in": n_in,
            "n_out": n_out,
            "n_in_served": served_in,
            "n_out_served": served_out,
            "summary_tokens": summary_tokens,
            "completed": done,
            "server": jobs.server[:n].astype(np.int32),
            "start_s": start,
            "first_token_s": first,
            "finish_s": finish,
            "wait_s": start - arrival_s,
            "ttft_s": first - arrival_s,
            "tpot_s": tpot,
            "e2e_s": finish - arrival_s,
            "energy_j": energy[:n] + summary_energy,
            "summary_energy_j": summary_energy,
            "input_tokens_dropped": n_in - served_in,
            "output_tokens_cut": n_out - served_out,
            "preemptions": jobs.preemptions[:n],
            "recomputed_tokens": jobs.extra_prefill_tokens[:n],
            "reject_reason": pd.Categorical.from_codes(jobs.reason[:n], categories=_REASONS),
        }
    )
    frame["shaped"] = (frame["input_tokens_dropped"] > 0) | (frame["output_tokens_cut"] > 0)
    return frame

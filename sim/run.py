"""`simulate`: replay a trace through a policy and one (or two) servers; no Hydra, no MLflow.

trace → policy (static policies shape the whole trace up front; dynamic ones decide at arrival
in a dispatcher process) → servers (SimPy) → job table → per-request records.
Summarization requests run on a separate summarizer server or on the main one; when one
finishes, the user's request (now on the summary) is submitted to the main server.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import simpy

from oracle.model import Oracle
from sim.config import ServerConfig
from sim.costs import StepCosts, kv_capacity_tokens
from sim.jobs import REJECTED, JobTable
from sim.policies.base import Policy, Request, unshaped
from sim.records import request_records
from sim.server import Server, ServerStats


@dataclass(frozen=True)
class SimResult:
    """One simulation: per-request records, per-server activity, simulated and wall time (s)."""

    policy: str
    requests: pd.DataFrame
    servers: tuple[ServerStats, ...]
    makespan_s: float
    wall_s: float


def simulate(
    requests: pd.DataFrame,
    oracle: Oracle,
    server: ServerConfig,
    policy: Policy | None = None,
    *,
    progress: bool = False,
) -> SimResult:
    """Serve `requests` (columns arrival_s sorted, n_in, n_out) shaped by `policy` (default: none)."""
    policy = policy or Policy()
    arrival, n_in, n_out = _arrays(requests)
    shaping = unshaped(n_in, n_out) if policy.dynamic else policy.shape(n_in, n_out)
    parents = np.flatnonzero(shaping.summary_tokens > 0)
    if parents.size and policy.summarizer is None:
        raise ValueError(f"policy {policy.name!r} asks for summaries but has no summarizer")
    jobs = JobTable(
        np.concatenate([shaping.n_in, n_in[parents]]),
        np.concatenate([shaping.n_out, shaping.summary_tokens[parents]]),
    )
    start = time.perf_counter()
    env = simpy.Environment()
    servers = _wire(env, jobs, arrival, n_in, n_out, parents, oracle, server, policy)
    bar = _progress(env, float(arrival[-1]) if arrival.size else 0.0, progress)
    env.run()
    wall = time.perf_counter() - start
    if bar is not None:
        bar.close()
    stats = tuple(s.stats() for s in servers)
    records = request_records(jobs, arrival, n_in, n_out, parents, [s.costs for s in servers], server.exact_steps)
    finish = records["finish_s"].to_numpy()
    makespan = float(np.nanmax(finish)) if np.isfinite(finish).any() else 0.0
    makespan = max(makespan, float(arrival[-1]) if arrival.size else 0.0)
    return SimResult(policy.name, records, stats, makespan, wall)


def _arrays(requests: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = {"arrival_s", "n_in", "n_out"} - set(requests.columns)
    if missing:
        raise ValueError(f"requests lack column(s) {sorted(missing)}")
    arrival = requests["arrival_s"].to_numpy(dtype=float)
    if arrival.size and (np.any(np.diff(arrival) < 0) or arrival[0] < 0):
        raise ValueError("requests.arrival_s must be sorted and non-negative")
    return arrival, requests["n_in"].to_numpy(np.int64), requests["n_out"].to_numpy(np.int64)


def _wire(
    env: simpy.Environment,
    jobs: JobTable,
    arrival: np.ndarray,
    n_in: np.ndarray,
    n_out: np.ndarray,
    parents: np.ndarray,
    oracle: Oracle,
    config: ServerConfig,
    policy: Policy,
) -> list[Server]:
    """Build the servers and route arrivals to them (feeds, callbacks, dispatcher)."""
    main = _server(env, jobs, oracle, config, 0, "main")
    if policy.dynamic:
        env.process(_dispatch(env, arrival, n_in, n_out, policy, main, jobs))
        return [main]
    direct = np.ones(arrival.size, dtype=bool)
    direct[parents] = False
    ids = np.flatnonzero(direct)
    if not parents.size:
        main.feed(arrival[ids], ids)
        return [main]
    assert policy.summarizer is not None
    summaries = _Summaries(jobs, arrival.size, parents.tolist(), main)
    summary_ids = arrival.size + np.arange(parents.size)
    if policy.summarizer.placement == "same":
        times = np.concatenate([arrival[ids], arrival[parents]])
        order = np.lexsort((np.concatenate([ids, parents]), times))
        main.feed(times[order], np.concatenate([ids, summary_ids])[order])
        main.on_finish, main.on_reject = summaries.finished, summaries.rejected
        return [main]
    main.feed(arrival[ids], ids)
    side = _server(env, jobs, policy.summarizer.oracle, config, 1, "summarizer")
    side.feed(arrival[parents], summary_ids)
    side.on_finish, side.on_reject = summaries.finished, summaries.rejected
    return [main, side]


def _server(
    env: simpy.Environment, jobs: JobTable, oracle: Oracle, config: ServerConfig, index: int, name: str
) -> Server:
    kv = kv_capacity_tokens(oracle, config.kv_capacity_tokens, config.kv_memory_fraction)
    return Server(env, StepCosts.from_oracle(oracle), config, jobs, kv, index=index, name=name)


@dataclass(frozen=True)
class _Summaries:
    """Summarization jobs n, n+1, … serve user requests `parents`; their outcomes route here."""

    jobs: JobTable
    n: int
    parents: list[int]
    main: Server

    def finished(self, job: int, t: float) -> None:
        """A summary is ready: the user's request (now on the summary) goes to the main server."""
        if job >= self.n:
            self.main.submit(self.parents[job - self.n], t)

    def rejected(self, job: int, t: float) -> None:
        """A prompt too long for the summarizer: its user's request is rejected too."""
        if job >= self.n:
            parent = self.parents[job - self.n]
            self.jobs.status[parent], self.jobs.arrival_s[parent] = REJECTED, t


def _dispatch(
    env: simpy.Environment,
    arrival: np.ndarray,
    n_in: np.ndarray,
    n_out: np.ndarray,
    policy: Policy,
    server: Server,
    jobs: JobTable,
) -> Generator[Any, Any, None]:
    """Arrivals for dynamic policies: decide with the server's state at arrival, then submit."""
    for i, (t, a, b) in enumerate(zip(arrival.tolist(), n_in.tolist(), n_out.tolist(), strict=True)):
        if t > env.now:
            yield env.timeout(t - env.now)
        d = policy.decide(Request(t, a, b), server.state())
        if d.summary_tokens:
            raise ValueError(f"dynamic policy {policy.name!r} cannot add summarization requests")
        jobs.n_in[i], jobs.n_out[i] = d.n_in, d.n_out
        server.submit(i, t)


def _progress(env: simpy.Environment, horizon_s: float, enabled: bool) -> Any:
    """A tqdm bar over simulated seconds, fed by a process that wakes 200 times."""
    if not enabled or horizon_s <= 0:
        return None
    from tqdm import tqdm

    bar = tqdm(total=round(horizon_s), unit="sim-s", desc="simulating", leave=False)

    def tick() -> Generator[Any, Any, None]:
        step = horizon_s / 200
        while env.now < horizon_s:
            yield env.timeout(step)
            bar.update(min(round(env.now), bar.total) - bar.n)

    env.process(tick())
    return bar

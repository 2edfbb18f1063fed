"""Closed-loop load, as serving benchmarks make it (vLLM's benchmark_serving, aiperf, genai-perf):
`clients` clients each send a request, wait for it to finish, wait their think time and send the
next, until every request of the trace is sent.

Arrivals then depend on completions: the requests are routed one by one (`sim.serving.wiring`'s dispatcher,
which also applies a dynamic policy or sends a summarization job first) and the clients listen to
the servers' outcomes (`Server.on_finish`, `Server.on_reject`). Requests go out in the trace's
order, the first `clients` at 0.0 s; a send is its request's arrival, so TTFT and latency run
from it. With no think time the next request goes out within the completion's event, at the
finish time exactly, and can join the server's next step, as a benchmark client's would (a SimPy
process would resume only after the server had formed that step); with think time, or after a
rejection (which comes within the send itself), a timeout's callback sends it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import simpy

from sim.serving.server import Server

Send = Callable[[int, float], None]
"""Route request i (trace order) arriving at t (s)."""


class Clients:
    """The clients of a closed loop: they write each request's arrival (s) into `arrival` as they
    send it (NaN until then) and send through `send`."""

    def __init__(self, env: simpy.Environment, clients: int, arrival: np.ndarray, think_s: np.ndarray, send: Send):
        self.env, self.arrival, self.think, self.send = env, arrival, think_s, send
        self.n = arrival.size
        self.sent = min(clients, self.n)  # the first requests go out at 0.0, with the dispatcher's first event
        arrival[:] = np.nan
        arrival[: self.sent] = 0.0

    def finished(self, job: int, t: float) -> None:
        """Job `job` finished at t (s): if it is a user request, its client sends the next one."""
        if job < self.n:
            self._after(job, t, at_once=True)

    def rejected(self, job: int, t: float) -> None:
        """User request `job` was rejected at t (s), within its send: its client moves on."""
        if job < self.n:
            self._after(job, t, at_once=False)

    def _after(self, job: int, t: float, at_once: bool) -> None:
        """The client of request `job`, done at t (s), sends the next request after its think time."""
        if self.sent == self.n:
            return
        think = float(self.think[job])
        if at_once and think == 0.0:
            self._send(t)
            return
        at = t + think
        self.env.timeout(max(at - self.env.now, 0.0)).callbacks.append(lambda _: self._send(at))

    def _send(self, t: float) -> None:
        """The next request goes out at t (s), if one is left (a client that thought longer finds none)."""
        i = self.sent
        if i == self.n:
            return
        self.sent = i + 1
        self.arrival[i] = t
        self.send(i, t)


class Outcomes(Protocol):
    """What the summaries of a run (`sim.serving.wiring._Summaries`) do with a job's outcome."""

    @property
    def n(self) -> int: ...  # user requests; jobs from n on are summaries

    @property
    def parents(self) -> list[int]: ...  # the user request of each summary

    def finished(self, job: int, t: float) -> None: ...

    def rejected(self, job: int, t: float) -> None: ...


def listen(servers: Sequence[Server], clients: Clients, summaries: Outcomes | None) -> None:
    """Each server tells the summaries (first) and the clients of every outcome; a request whose
    summarization job was rejected is rejected too, and its client moves on."""

    def finished(job: int, t: float) -> None:
        if summaries is not None:
            summaries.finished(job, t)
        clients.finished(job, t)

    def rejected(job: int, t: float) -> None:
        if summaries is not None:
            summaries.rejected(job, t)
            job = job if job < summaries.n else summaries.parents[job - summaries.n]
        clients.rejected(job, t)

    for s in servers:
        s.on_finish, s.on_reject = finished, rejected


def closed_loop(requests: pd.DataFrame, clients: int | None) -> tuple[int, np.ndarray] | None:
    """(clients, think times in s) of a closed-loop replay, or None for an open loop: `clients`, or
    the trace's `attrs["clients"]` (`traces.load("closed_loop")` sets it); think times from the
    `think_s` column (0 without one). ValueError for a bad count or think time."""
    clients = requests.attrs.get("clients") if clients is None else clients
    if clients is None:
        return None
    if isinstance(clients, bool) or not isinstance(clients, int | np.integer) or clients < 1:
        raise ValueError(f"closed loop: clients must be an integer >= 1, got {clients!r}")
    if "think_s" not in requests.columns:
        return int(clients), np.zeros(len(requests))
    think = requests["think_s"].to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(think) | (think < 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"requests: request {i}: think_s {think[i].item()!r} must be a number >= 0 (s)")
    return int(clients), think

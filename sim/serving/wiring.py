"""The wiring of a run under SimPy: a fleet's servers built, and arrivals routed to them as the
clock passes them (feeds read alone, or `_Dispatcher` routing each one at its time, with summaries
and a closed loop's clients), or handed to `RoutedFleet` when the compiled loop can run them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy

from oracle.model import Oracle
from sim.config import ServerConfig
from sim.engine.costs import StepCosts
from sim.engine.jobs import REJECT_SUMMARY, REJECTED, JobTable
from sim.engine.kv_sizing import replica_kv
from sim.policies.base import Policy, Request
from sim.serving.clients import Clients, listen
from sim.serving.fleet import Fleet
from sim.serving.routed import RoutedFleet, fleet_fits
from sim.serving.routers import make_router
from sim.serving.routers.base import Router
from sim.serving.server import Server


def wire(
    env: simpy.Environment,
    jobs: JobTable,
    arrival: np.ndarray,
    n_in: np.ndarray,
    n_out: np.ndarray,
    parents: np.ndarray,
    fleet: Fleet,
    policy: Policy,
    loop: tuple[int, np.ndarray] | None = None,
) -> tuple[list[Server], RoutedFleet | None]:
    """Build the servers and route arrivals to them (feeds, or a dispatcher and callbacks), and
    the plain loop that runs them instead of SimPy, if one can.

    Servers fed all their jobs run alone, ahead of the SimPy clock (`sim.serving.run._replay_alone`). A router
    that decides per arrival, with no dynamic policy and no summaries, runs in `RoutedFleet`. A
    closed loop's (`loop`: clients, think times in s) clients send through the dispatcher.
    """
    replicas = _replicas(env, jobs, fleet)
    router = make_router(fleet, replicas)
    fixed = loop is None and not policy.dynamic and not parents.size  # every arrival known, nothing decided on it
    if fixed and router.static:
        if len(replicas) == 1:
            replicas[0].feed(arrival, range(arrival.size), alone=True)
            return replicas, None
        assigned = router.assign(*jobs.lengths())
        for s in replicas:
            ids = np.flatnonzero(assigned == s.index)
            s.feed(arrival[ids], ids, alone=True)
        return replicas, None
    if fixed and fleet_fits(replicas, router):
        return replicas, RoutedFleet(replicas, router, arrival, jobs)
    servers = list(replicas)
    side = summaries = None
    if parents.size:
        assert policy.summarizer is not None
        if policy.summarizer.placement == "separate":  # on its own GPU, with the first pool's engine config
            summarizer = policy.summarizer.oracle
            side = _server(env, jobs, summarizer, fleet.pools[0].server, len(servers), "summarizer", "summarizer")
            servers.append(side)
        summaries = _Summaries(jobs, arrival.size, parents.tolist(), router)
        for s in servers:
            s.on_finish, s.on_reject = summaries.finished, summaries.rejected
    if loop is None:
        _Dispatcher(env, arrival, n_in, n_out, parents, policy, router, side, jobs)
        return servers, None
    first = arrival[: loop[0]]  # the clients' first requests, sent at 0.0 s
    dispatcher = _Dispatcher(env, first, n_in, n_out, parents, policy, router, side, jobs)
    listen(servers, Clients(env, loop[0], arrival, loop[1], dispatcher.send), summaries)
    return servers, None


def _replicas(env: simpy.Environment, jobs: JobTable, fleet: Fleet) -> list[Server]:
    """The fleet's servers, pool by pool; named after the pool (with -k when it has several)."""
    servers: list[Server] = []
    for pool in fleet.pools:
        costs = StepCosts.from_oracle(pool.oracle)  # once per pool: its clock ladder takes ~2 ms
        for k in range(pool.replicas):
            name = pool.name if pool.replicas == 1 else f"{pool.name}-{k}"
            servers.append(_server(env, jobs, pool.oracle, pool.server, len(servers), name, pool.name, costs))
    return servers


def _server(
    env: simpy.Environment,
    jobs: JobTable,
    oracle: Oracle,
    config: ServerConfig,
    index: int,
    name: str,
    pool: str,
    costs: StepCosts | None = None,
) -> Server:
    """A server of `oracle` under `config`; `costs` its step costs if already built (`StepCosts.from_oracle`)."""
    kv = replica_kv(oracle, config)
    costs = StepCosts.from_oracle(oracle) if costs is None else costs
    return Server(env, costs, config, jobs, kv, index=index, name=name, pool=pool)


@dataclass(frozen=True)
class _Summaries:
    """Summarization jobs n, n+1, … serve user requests `parents`; their outcomes route here."""

    jobs: JobTable
    n: int
    parents: list[int]
    router: Router

    def finished(self, job: int, t: float) -> None:
        """A summary is ready: the user's request (now on the summary) goes to a replica."""
        if job >= self.n:
            parent = self.parents[job - self.n]
            self.router.pick(self.jobs.n_in[parent], self.jobs.n_out[parent], parent).submit(parent, t)

    def rejected(self, job: int, t: float) -> None:
        """A prompt too long for the summarizer: its user's request is rejected too."""
        if job >= self.n:
            parent = self.parents[job - self.n]
            self.jobs.status[parent] = REJECTED
            self.jobs.reason[parent] = REJECT_SUMMARY


class _Dispatcher:
    """Arrivals routed one by one at their times (`times`: of the first requests, trace order;
    a closed loop's clients `send` the rest): a dynamic policy decides with the chosen
    replica's state; a request to summarise sends its summarization job first (to the
    summarizer, or routed). A callback on one timeout per distinct arrival time, not a process.
    The servers it must wake are woken at the end of that callback, in the order of their
    submits, as urgent events of that time would: no other event comes between."""

    def __init__(
        self,
        env: simpy.Environment,
        times: np.ndarray,
        n_in: np.ndarray,
        n_out: np.ndarray,
        parents: np.ndarray,
        policy: Policy,
        router: Router,
        summarizer: Server | None,
        jobs: JobTable,
    ) -> None:
        self.env, self.policy, self.router, self.summarizer, self.jobs = env, policy, router, summarizer, jobs
        # memoryviews read Python numbers in place (no list of objects per request)
        self.times, self.n_in, self.n_out = times.data, n_in.data, n_out.data
        self.summary_of = {p: n_in.size + k for k, p in enumerate(parents.tolist())}
        self.next = 0
        self._direct = False  # submits wake their servers themselves (`send`)
        self._woken: list[tuple[Server, float]] = []  # servers to wake at the end of this callback
        env.timeout(0.0).callbacks.append(self._arrive)

    def _arrive(self, _: simpy.Event) -> None:
        """Route every arrival due now, wait for the next one, then wake the servers to wake: after
        the next timeout is scheduled, as urgent wake-ups would run after this callback, so that
        the timeouts the wakes schedule come after it among events of one time."""
        env, times, i, n = self.env, self.times, self.next, len(self.times)
        now = env.now
        while i < n and times[i] <= now:
            self._route(i, times[i])
            i += 1
        self.next = i
        if i < n:
            env.timeout(times[i] - now).callbacks.append(self._arrive)
        woken = self._woken
        for server, t in woken:
            server.wake(t)
        woken.clear()

    def send(self, i: int, t: float) -> None:
        """Route request i arriving at t (s) from outside the arrival callback (a closed-loop
        client's send): a server to wake is woken by an urgent event, as `Server.submit` does."""
        self._direct = True
        try:
            self._route(i, t)
        finally:
            self._direct = False

    def _submit(self, server: Server, job: int, t: float) -> None:
        if self._direct:
            server.submit(job, t)
        elif server.offer(job, t):
            self._woken.append((server, t))

    def _route(self, i: int, t: float) -> None:
        jobs, router = self.jobs, self.router
        if self.policy.dynamic:
            server = router.pick(self.n_in[i], self.n_out[i], i)
            d = self.policy.decide(Request(t, self.n_in[i], self.n_out[i]), server.state())
            if d.summary_tokens:
                raise ValueError(f"dynamic policy {self.policy.name!r} cannot add summarization requests")
            jobs.n_in[i], jobs.n_out[i] = d.n_in, d.n_out
            if d.kept_prefix is not None and jobs.prefix is not None:
                jobs.prefix.keep(i, d.kept_prefix)
            self._submit(server, i, t)
        elif i in self.summary_of:
            job = self.summary_of[i]
            self._submit(self.summarizer or router.pick(jobs.n_in[job], jobs.n_out[job], job), job, t)
        else:
            self._submit(router.pick(jobs.n_in[i], jobs.n_out[i], i), i, t)

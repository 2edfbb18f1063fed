"""`RoutedFleet`: a fleet whose router decides per arrival, run to the end in the compiled loop
(`sim.kernel.fleet.run_fleet`) instead of SimPy, when `fleet_fits` says it can.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import typed

from sim.engine.jobs import JobTable
from sim.kernel import picks
from sim.kernel.fleet import FINISHED as FLEET_DONE
from sim.kernel.fleet import new_fleet, now_s, rooms_of, run_fleet
from sim.kernel.replica import compiling, drain, fast, replica_of, room
from sim.serving.estimates import shared_above_idle_j
from sim.serving.routers.base import Router
from sim.serving.server import Server

PROGRESS_EVERY = 4096  # arrival instants between two updates of a routed fleet's progress bar


def fleet_fits(servers: Sequence[Server], router: Router) -> bool:
    """Whether `RoutedFleet` can run these replicas: a router with compiled picks (it reads the
    replicas itself, so their `on_change` is not called), plain `Server`s (a subclass may change
    its events) in the fast mode with no other listener, nothing fed to them."""
    return router.kernel_pick is not None and all(
        type(s) is Server and fast(s) and not (s.alone or len(s.feed_times)) for s in servers
    )


class RoutedFleet:
    """Arrivals at `times_s` (sorted; job i arrives at times_s[i]) routed by `router` to `servers`
    (in index order, pool by pool), run to the end by `run`; `now` is the event clock (s)."""

    def __init__(self, servers: Sequence[Server], router: Router, times_s: np.ndarray, jobs: JobTable) -> None:
        assert fleet_fits(servers, router) and [s.index for s in servers] == list(range(len(servers)))
        self.servers = list(servers)
        self.reps = typed.List([replica_of(s) for s in self.servers])
        fleet = router.fleet
        names = [s.pool for s in self.servers]
        lo = np.array([names.index(p.name) for p in fleet.pools], dtype=np.int64)
        pools = (
            lo,
            lo + np.array([p.replicas for p in fleet.pools], dtype=np.int64),
            np.array([p.max_input_tokens or -1 for p in fleet.pools], dtype=np.int64),
            np.array([p.max_output_tokens or -1 for p in fleet.pools], dtype=np.int64),
            np.array([p.server.max_num_tokens or 0 for p in fleet.pools], dtype=np.int64),
            np.array([shared_above_idle_j(self.servers[k].costs) for k in lo]),
        )
        h = fleet.slo_headroom
        times = np.ascontiguousarray(times_s, dtype=float)
        self.f = new_fleet(
            picks.code(router),
            times,
            jobs.server,
            len(self.servers),
            pools,
            h * fleet.slo.ttft_s,
            h * fleet.slo.tpot_s,
            fleet.cache_balance,
        )

    @property
    def now(self) -> float:
        """The event clock (s): the time of the event under way, as `simpy.Environment.now`."""
        return float(now_s(self.f))

    def run(self, bar: Any = None) -> None:
        """Every event to the last: arrivals at their times, the replicas' steps and spans."""
        for s in self.servers:
            s.idle = s._waiting = True
        rooms = rooms_of(self.f)  # the per-replica span-row limits, written in place before each run
        while True:
            rooms[:] = [room(s) for s in self.servers]
            status = compiling(run_fleet, self.f, self.reps, PROGRESS_EVERY)
            due = [k for k, (s, r) in enumerate(zip(self.servers, self.reps, strict=True)) if drain(s, r)]
            for k in due:
                self.servers[k].ledger._on_full()
            if bar is not None:
                bar.update(max(min(round(self.now), bar.total) - bar.n, 0))
            if status == FLEET_DONE:
                return

"""`energy_aware`: among the replicas whose estimated TTFT and TPOT stay within `slo_headroom` × the
SLO, the one where the request adds the least energy (`sim.serving.estimates`); if none
qualifies, least tokens."""

from __future__ import annotations

from collections.abc import Sequence

from numba import njit

from sim.engine.costs import sequence_cost
from sim.kernel import routers as compiled
from sim.serving.estimates import IDLE, added_energy_j, meets_slo, shared_above_idle_j, tpot_estimate_s
from sim.serving.fleet import Fleet
from sim.serving.load_index import LoadIndex
from sim.serving.routers import register
from sim.serving.routers.base import Router
from sim.serving.server import Server


@njit(cache=True)
def kernel_pick(f, reps, j, n_in, n_out):  # type: ignore[no-untyped-def]
    """`EnergyAware.pick` compiled: the replica that adds the least energy, then the least
    outstanding work, then the first, among those meeting the SLO; least tokens if none does.
    It scans every replica of a pool (two arrays) and reads one only to check its SLO."""
    best, best_e, best_w = -1, 0.0, 0
    for p in range(f.pool_lo.size):
        lo, hi = f.pool_lo[p], f.pool_hi[p]
        if compiled.tpot_s(reps[lo].ct, 0, 0, 0.0, n_in) > f.tpot_s:
            continue  # too slow on this GPU even alone
        own = compiled.sequence_cost(reps[lo].ce, n_in, n_out)
        shared = f.pool_shared_j[p]
        for k in range(lo, hi):
            beyond = n_out - f.finish[k]
            e = own + (beyond if beyond > 0 else 0) * shared
            w = f.load[k]
            if best >= 0 and (e > best_e or (e == best_e and w >= best_w)):
                continue  # (k > best: an equal w loses to the earlier replica)
            if compiled.meets_slo(f, reps[k], p, n_in, n_out):
                best, best_e, best_w = k, e, w
    return best if best >= 0 else compiled.least(f, 0, f.load.size)


@register
class EnergyAware(Router):
    """Least marginal energy among replicas whose estimated TTFT and TPOT meet the SLO."""

    name = "energy_aware"
    kernel_pick = staticmethod(kernel_pick)

    def __init__(self, fleet: Fleet, servers: Sequence[Server]) -> None:
        super().__init__(fleet, servers)
        self._groups = [
            (group[0].costs, shared_above_idle_j(group[0].costs), LoadIndex(group, by_finish=True))
            for group in self.by_pool
        ]
        self.load_indexes = [index for _, _, index in self._groups]

    def pick(self, n_in: int, n_out: int, job: int = -1) -> Server:
        """The replica that adds the least energy (then the least outstanding work, then the
        first) among those meeting the SLO; least tokens if none does.

        Within a pool the added energy only grows as the steps until a replica's last decoder
        finishes shrink, so the walk goes down `LoadIndex.order` and stops at the first replica
        that adds more than the best found: it visits the replicas whose decoders outlast the
        request, then few others. The SLO estimates, which need more of a replica's state, are
        computed only for one that would win, from its engine in place (no snapshot).
        """
        h = self.fleet.slo_headroom
        ttft_s, tpot_s = h * self.fleet.slo.ttft_s, h * self.fleet.slo.tpot_s
        best, best_e, best_w, best_i = None, 0.0, 0, 0
        for costs, shared, index in self._groups:
            if tpot_estimate_s(costs, IDLE, n_in) > tpot_s:
                continue  # too slow on this GPU even alone
            own = sequence_cost(costs.energy_j, n_in, n_out)
            index.refresh()
            servers = index.servers
            for neg_finish, w, i in index.order:
                e = added_energy_j(own, n_out, -neg_finish, shared)
                s = servers[i]
                if best is not None:
                    if e > best_e:
                        break  # every replica further down adds at least as much
                    if e == best_e and (w > best_w or (w == best_w and s.index > best_i)):
                        continue
                if not meets_slo(costs, s, n_in, n_out, ttft_s, tpot_s):
                    continue
                best, best_e, best_w, best_i = s, e, w, s.index
        if best is not None:
            return best
        least = [index.least() for _, _, index in self._groups]
        return min(least, key=lambda s: (s.engine.outstanding_tokens(), s.index))

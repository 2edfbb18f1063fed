"""`energy_aware`: among the replicas whose estimated TTFT and TPOT stay within `slo_headroom` × the
SLO, the one where the request adds the least energy (`sim.serving.estimates`); if none
qualifies, least tokens."""

from __future__ import annotations

from collections.abc import Sequence

from sim.engine.costs import sequence_cost
from sim.kernel.routers import ENERGY_AWARE
from sim.serving.estimates import IDLE, added_energy_j, meets_slo, shared_above_idle_j, tpot_estimate_s
from sim.serving.fleet import Fleet
from sim.serving.load_index import LoadIndex
from sim.serving.routers import register
from sim.serving.routers.base import Router
from sim.serving.server import Server


@register
class EnergyAware(Router):
    """Least marginal energy among replicas whose estimated TTFT and TPOT meet the SLO."""

    name = "energy_aware"
    kernel_code = ENERGY_AWARE

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

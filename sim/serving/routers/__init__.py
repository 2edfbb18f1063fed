"""Routers: which replica of a fleet takes a request.

- `round_robin`: replicas in turn;
- `least_tokens`: the replica with the least outstanding work in tokens;
- `length_aware`: the first pool whose length bounds admit the request, then least tokens;
- `energy_aware`: the least added energy among the replicas expected to meet the SLO;
- `cache_aware`: the most of the prompt cached, weighed against load.

Each router is one module of this package, named as the router, whose docstring says its rule in
full: a `Router` subclass (`sim.serving.routers.base`) registered by name with `@register`
(`ROUTERS`, what `fleet.router` names), and beside its `pick` the same rule compiled (`kernel_pick`,
a numba function of the compiled fleet; what it may read is `sim.kernel.routers`). Every module
here is imported below, so a new router is one module here; config validation, `--help`, the
kernel's dispatch to compiled picks (`sim.kernel.picks`) and the tests read the registry. A router
with a compiled pick runs a fleet in the compiled loop; one without runs it under SimPy.

The estimates `energy_aware` reads are `sim.serving.estimates`. A router that can decide without
server state (`static`) assigns the whole trace up front, and the servers read it with no events.
The others keep a `LoadIndex` (`sim.serving.load_index`) per pool, told by each replica when its
engine changed, so that a pick re-reads the few replicas that changed since the last one instead
of every replica; the picks are those of the modules' definitions (tested against a pass over
every replica).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Sequence

from sim.registry import Registry
from sim.serving.fleet import Fleet
from sim.serving.routers.base import Router
from sim.serving.server import Server

ROUTERS: Registry[type[Router]] = Registry("router")  # name → its class
register = ROUTERS.register


def make_router(fleet: Fleet, servers: Sequence[Server]) -> Router:
    """The fleet's router over its serving replicas (in pool order)."""
    if fleet.router not in ROUTERS:
        raise ValueError(f"router must be one of {tuple(ROUTERS)}, got {fleet.router!r}")
    return ROUTERS[fleet.router](fleet, servers)


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

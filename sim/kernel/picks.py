"""Routers' compiled picks, dispatched by the fleet's router (`f.router`, its `code`): which
replica of a routed fleet (`sim.kernel.fleet`) takes a request.

Each router writes its compiled pick in its own module, beside its Python one, as a numba
function `(f, reps, j, n_in, n_out) -> replica` named by its class's `kernel_pick`
(`sim.serving.routers.base.Router`); what picks read of the fleet and the replicas is
`sim.kernel.routers`. This module writes the dispatch from the router registry
(`sim.kernel.generated`), so that a new router runs in the compiled fleet loop with no kernel file
touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sim.kernel import generated
from sim.serving.routers import ROUTERS

if TYPE_CHECKING:
    from sim.serving.routers.base import Router

MODULE = "sim_kernel_pick_dispatch"  # the generated module's name in sys.modules


def _tables() -> tuple[list[Any], dict[str, int]]:
    """The distinct compiled picks (registry order) and each router's code among them."""
    distinct: list[Any] = []
    codes = {}
    for name, cls in ROUTERS.items():
        if cls.kernel_pick is not None:
            if cls.kernel_pick not in distinct:
                distinct.append(cls.kernel_pick)
            codes[name] = distinct.index(cls.kernel_pick)
    return distinct, codes


def dispatch_source(distinct: list[Any]) -> str:
    """Python source of the dispatch: `pick`, a compiled function that calls the pick of the
    fleet's router code (0 also the fallback)."""
    return generated.dispatch_source(__name__, {"pick": distinct}, "f.router")


_DISTINCT, CODES = _tables()
_dispatch = generated.load(MODULE, "pick_dispatch.py", dispatch_source(_DISTINCT))
pick = _dispatch.pick


def code(router: Router) -> int:
    """The fleet's `router` setting for this router: which compiled pick the dispatch calls."""
    if router.name in CODES and ROUTERS.get(router.name) is type(router):
        return CODES[router.name]
    raise ValueError(
        f"router {router.name!r} has no compiled pick the kernel knows: put its module in "
        "sim/serving/routers/ (imported with the package) so that the kernel dispatches to its `kernel_pick`"
    )

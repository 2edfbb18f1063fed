"""What a scheduler plug-in decides, compiled and dispatched by the replica's scheduler: which
sequence to preempt, the KV headroom and reserve an admission must leave, requests never admitted,
the steps over which those rules hold, and the state a preemption changes.

Each scheduler writes its compiled rules in its own module and names them in its class's
`compiled` (`sim.schedulers.base.CompiledHooks`; the base class's are vLLM's and TensorRT-LLM's).
This module writes the dispatch from the scheduler registry (`sim.kernel.generated`): one numba
function per hook that calls the rules of the replica's scheduler (`r.hooks`, its `code`), so that
a new scheduler touches no kernel file.
"""

from __future__ import annotations

from typing import Any

from sim.kernel import generated
from sim.schedulers import SCHEDULERS
from sim.schedulers.base import HOOK_NAMES, Scheduler

MODULE = "sim_kernel_hook_dispatch"  # the generated module's name in sys.modules


def _tables() -> tuple[list[Any], dict[str, int]]:
    """The distinct compiled hooks, the base class's first (code 0), and each scheduler's code."""
    distinct = [Scheduler.compiled]
    codes = {}
    for name, cls in SCHEDULERS.items():
        if cls.compiled not in distinct:
            distinct.append(cls.compiled)
        codes[name] = distinct.index(cls.compiled)
    return distinct, codes


def dispatch_source(distinct: list[Any]) -> str:
    """Python source of the dispatch: for each hook, a compiled function that calls the hook of
    the replica's scheduler code (0: the base rules, also the fallback)."""
    functions = {hook: [getattr(hooks, hook) for hooks in distinct] for hook in HOOK_NAMES}
    return generated.dispatch_source(__name__, functions, "r.hooks")


_DISTINCT, CODES = _tables()
_dispatch = generated.load(MODULE, "hook_dispatch.py", dispatch_source(_DISTINCT))
never_admitted = _dispatch.never_admitted
headroom = _dispatch.headroom
reserve = _dispatch.reserve
steady_steps = _dispatch.steady_steps
victim = _dispatch.victim
preempted = _dispatch.preempted


def code(scheduler: Scheduler) -> int:
    """The replica's `hooks` setting for this scheduler: which compiled rules the dispatch calls."""
    if scheduler.name in CODES and SCHEDULERS.get(scheduler.name) is type(scheduler):
        return CODES[scheduler.name]
    if type(scheduler).compiled == Scheduler.compiled:
        return 0
    raise ValueError(
        f"scheduler {scheduler.name!r} was registered after the kernel wrote its hook dispatch: put its module "
        "in sim/schedulers/ (imported with the package) so that the kernel dispatches to its compiled hooks"
    )

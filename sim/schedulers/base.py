"""What a serving engine's scheduler decides, as a plug-in of the engine (`sim.engine.simple`, `sim.kernel`).

A scheduler is one class: its rules as class attributes (what the engine reads at every step)
and hooks the engine calls at the rare decisions (which sequence to preempt, how much KV cache
an admission must leave free), with a frozen dataclass `Options` of its own settings
(`server.scheduler_options`). The base class is vLLM-like: paged KV, the most recently admitted
sequence preempted, preempted sequences back at the front of the queue, no admission headroom.

The exact-steps reference (`sim.engine.simple`) calls these methods. The compiled kernel
(`sim.kernel`: servers fed alone, routed fleets, the SimPy process) runs the same rules compiled,
written in the scheduler's own module as numba functions of a replica `r`
(`sim.kernel.state.Replica`) and named by the class's `compiled` (`CompiledHooks`);
`sim.kernel.hooks` dispatches to them by the replica's scheduler, so a new scheduler touches no
kernel file. The base rules below are the kernel's default.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
from numba import njit

import sim.kernel  # noqa: F401  (first: its cache folder holds the compiled hooks below, `sim.kernel._KernelCache`)

if TYPE_CHECKING:
    from collections import deque

    from sim.engine.jobs import JobTable
    from sim.engine.kv import KvLayout


class EngineView(Protocol):
    """What the hooks read of the engine that calls them (`sim.engine.simple.SimpleEngine`, whose
    attributes these are): a plug-in needs the engine's state, not its module, which imports the
    plug-ins."""

    jobs: JobTable
    kv: KvLayout
    cap: int  # KV units of the cache
    N: int  # steps run
    order: dict[int, None]  # running sequences, admission order
    partial: tuple[int, int, int] | None  # the prompt mid-prefill: (job, tokens computed, prefill target)
    queue: deque[int]

    @property
    def B(self) -> int: ...  # decoders

    @property
    def decoders(self) -> dict[int, int]: ...  # job → the step after which it is done


FOREVER = 1 << 62  # steps: no limit


@njit(cache=True)
def kernel_never_admitted(r, n_in, n_out):  # type: ignore[no-untyped-def]
    """Whether a request of these lengths (tokens) could not be admitted even alone: the engine's
    own checks cover the base rule."""
    return False


@njit(cache=True)
def kernel_headroom(r):  # type: ignore[no-untyped-def]
    """KV units an admission must leave free for the running sequences' growth: none."""
    return 0


@njit(cache=True)
def kernel_reserve(r, j, chunk):  # type: ignore[no-untyped-def]
    """KV units an admission of job j sets aside beyond its chunk's: none."""
    return 0


@njit(cache=True)
def kernel_steady_steps(r):  # type: ignore[no-untyped-def]
    """Steps of plain decode over which `headroom` and `reserve` keep their rule: any."""
    return FOREVER


@njit(cache=True)
def kernel_victim(r):  # type: ignore[no-untyped-def]
    """The running sequence to preempt: the most recently admitted."""
    return r.otail


@njit(cache=True)
def kernel_preempted(r):  # type: ignore[no-untyped-def]
    """A step's preemptions are done: the base rules keep no state."""
    return


@dataclass(frozen=True)
class CompiledHooks:
    """A scheduler's rules for the compiled kernel: numba functions (`@njit(cache=True)`, defined at
    the top level of the scheduler's module) of a replica `r`, with the signatures of the base
    ones: never_admitted(r, n_in, n_out), headroom(r), reserve(r, j, chunk), steady_steps(r) (the
    steps of plain decode over which headroom and reserve keep their rule: decode spans run no
    longer), victim(r) and preempted(r). A scheduler's own settings and state are the replica's
    `hook_i` and `hook_f` arrays (`Scheduler.kernel_settings`)."""

    never_admitted: Any = kernel_never_admitted
    headroom: Any = kernel_headroom
    reserve: Any = kernel_reserve
    steady_steps: Any = kernel_steady_steps
    victim: Any = kernel_victim
    preempted: Any = kernel_preempted


HOOK_NAMES = tuple(f.name for f in fields(CompiledHooks))


@dataclass(frozen=True)
class NoOptions:
    """A scheduler without settings of its own."""


class Scheduler:
    """The base scheduler; subclasses set the class attributes and override the hooks."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[Any]] = NoOptions
    reserve_full: ClassVar[bool] = False  # reserve n_in + n_out of KV at admission; never grow, never evict
    admit_after_preemption: ClassVar[bool] = False  # admit waiting requests in a step that preempted one
    chunked_prefill: ClassVar[bool] = True  # default when server.chunked_prefill is null
    requeue_front: ClassVar[bool] = True  # a preempted sequence goes back to the queue's front (else its end)
    prefix_caching: ClassVar[bool] = True  # default when server.prefix_caching is null (vLLM V1: on)
    compiled: ClassVar[CompiledHooks] = CompiledHooks()  # the same rules for the compiled kernel

    def __init__(self, options: Any = None) -> None:
        self.options = self.Options() if options is None else options

    def victim(self, engine: EngineView) -> int:
        """The running sequence to preempt when the next step's KV does not fit: the most
        recently admitted (vLLM V1, TensorRT-LLM's MAX_UTILIZATION)."""
        return next(reversed(engine.order))

    def never_admitted(self, engine: EngineView, n_in: Any, n_out: Any) -> Any:
        """Whether requests of these lengths (tokens; ints or arrays) could not be admitted even
        alone, under this scheduler's own admission rule: `SimpleEngine.enqueue` rejects them on
        arrival (beside the engine's own checks, which cover the base rule)."""
        return np.zeros(np.shape(n_in), dtype=bool)

    def headroom(self, engine: EngineView) -> int:
        """KV units an admission must leave free for the running sequences' growth."""
        return 0

    def reserve(self, engine: EngineView, job: int, chunk: int) -> int:
        """KV units an admission of `job` sets aside beyond what its prefill chunk of `chunk`
        tokens allocates."""
        return 0

    def preempted(self, engine: EngineView) -> None:
        """Called once a step's preemptions are done (state a scheduler keeps may change)."""

    def kernel_settings(self) -> dict[str, Any]:
        """The settings and initial state this scheduler's compiled hooks read (`hook_i`,
        `hook_f`: lists of ints and floats, laid out as its hooks say)."""
        return {"hook_i": [], "hook_f": []}

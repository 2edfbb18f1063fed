"""What a serving engine's scheduler decides, as a plug-in of the engine (`sim.engine.simple`, `sim.kernel`).

A scheduler is one class: its rules as class attributes (what the engine reads at every step)
and hooks the engine calls at the rare decisions (which sequence to preempt, how much KV cache
an admission must leave free), with a frozen dataclass `Options` of its own settings
(`server.scheduler_options`). The base class is vLLM-like: paged KV, the most recently admitted
sequence preempted, preempted sequences back at the front of the queue, no admission headroom.

The compiled kernel (`sim.kernel`: servers fed alone and routed fleets) runs the same hooks
compiled, chosen by `kernel_settings` (`sim.kernel.hooks`); the exact-steps reference
(`sim.engine.simple`) calls these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from sim.kernel.hooks import BASE

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

    @property
    def fsum(self) -> int: ...  # Σ the decoders' finish steps

    @property
    def fmax(self) -> int: ...  # max of the decoders' finish steps


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
        """The compiled kernel's settings of this scheduler: its hook code (`hooks`, from
        `sim.kernel.hooks`), and the settings and initial state its compiled hooks read
        (`hook_i`, `hook_f`: lists of ints and floats, laid out as its hooks say)."""
        return {"hooks": BASE, "hook_i": [], "hook_f": []}

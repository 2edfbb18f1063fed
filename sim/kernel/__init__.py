"""The compiled replica kernel: one serving engine's rules, each written once, compiled by numba.

- `state`: a replica's state as one typed record (`Replica`, a numba structref): counters, the
  KV block phases, the queue and running lists (linked through per-job arrays), the heaps.
- `lists`: the queue, the running list, decoder slots and the lazy heaps.
- `kv`: KV units and block phases.
- `costs`: time (s) and energy (J) of steps and decode spans, under a power cap and a clock
  controller, on a clock ladder.
- `hooks`: what a scheduler plug-in decides (victim, admission headroom), by scheduler code.
- `admission`: forming a step: the queue, admission and the preemptions that make room.
- `decoding`: running steps: decode spans, closing a step, the decoders and their completions.
- `loop`: a replica's events, and the loop of a replica fed all its jobs up front.
- `fleet`: the loop of a routed fleet, in SimPy's event order; `picks`: the routers' compiled picks,
  by router code; `routers`: what the picks read of the fleet and its replicas.
- `generated`: the dispatch to plug-ins' compiled rules (`hooks`, `picks`), written from their registries.
- `engine`: `KernelEngine`, the engine interface (`sim.engine.simple.SimpleEngine`'s) over a `Replica`
  (the SimPy process).
- `replica`: the Python side of the loops: runs a server fed alone, and moves the buffers of either
  loop into the ledgers (`sim.serving.routed` runs a routed fleet with it).

Compiled code is cached on disk (`cache=True`) in a user cache folder named after a digest of
this package's sources and the scheduler and router plug-ins' (`cache_dir`: their compiled hooks
and picks are part of the kernel, `hooks`, `picks`): numba checks only a function's own file, so a
change to any of those files must compile the whole kernel afresh.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import shutil
import tempfile
from pathlib import Path

import numba
import platformdirs
from numba.core import caching

HERE = Path(__file__).resolve().parent
SCHEDULERS_DIR = HERE.parent / "schedulers"  # the plug-ins whose compiled hooks the kernel calls
ROUTERS_DIR = HERE.parent / "serving" / "routers"  # the plug-ins whose compiled picks the kernel calls
PLUGIN_DIRS = (SCHEDULERS_DIR, ROUTERS_DIR)


def cache_dir() -> Path:
    """The folder of this version of the kernel's compiled code."""
    digest = hashlib.sha256()
    for path in sorted([*HERE.glob("*.py"), *(p for d in PLUGIN_DIRS for p in d.glob("*.py"))]):
        digest.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + path.read_bytes())
    root = Path(platformdirs.user_cache_dir("sweetspot-sim")) / "kernel"
    return root / f"{digest.hexdigest()[:16]}-numba-{numba.__version__}"


class _KernelCache(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """numba's cache locator for the kernel's functions (this package's, the plug-ins' compiled
    hooks and picks, their dispatch): `cache_dir`, or where that cannot be created a temporary
    folder of this process (`fallback_dir`), never numba's own places, whose stamps see only a
    function's own file and could serve code compiled against an older callee. Other functions
    keep numba's."""

    def __init__(self, py_func: object, py_file: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno  # type: ignore[attr-defined]
        self._cache_path = str(CACHE_DIR)

    def get_cache_path(self) -> str:
        return self._cache_path

    @classmethod
    def from_function(cls, py_func: object, py_file: str) -> _KernelCache | None:
        if Path(py_file).resolve().parent not in (HERE, *PLUGIN_DIRS, CACHE_DIR.resolve(), _fallback):
            return None
        found = super().from_function(py_func, py_file)  # None if the folder cannot be created or written
        if found is None:
            found = cls(py_func, py_file)
            found._cache_path = str(fallback_dir())
        return found


CACHE_DIR = cache_dir()
_announced = False
_fallback: Path | None = None


def fallback_dir() -> Path:
    """A temporary folder of this process, for the kernel's compiled code and hook dispatch when
    `CACHE_DIR` cannot be created (they are then compiled afresh in every process)."""
    global _fallback
    if _fallback is None:
        _fallback = Path(tempfile.mkdtemp(prefix="sweetspot-kernel-")).resolve()
        atexit.register(shutil.rmtree, _fallback, ignore_errors=True)
    return _fallback


def announce_compiling() -> None:
    """Say once per process, before the first compiled call, that the kernel is about to be
    compiled when this version has no cached code yet (the first run after an install or change)."""
    global _announced
    if _announced:
        return
    _announced = True
    if not any(CACHE_DIR.glob("*.nbi")):
        logging.getLogger("sweetspot").info(
            "compiling the simulation kernel, once for this version (about 15 s on 2 cores; cached in %s)", CACHE_DIR
        )


if _KernelCache not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, _KernelCache)

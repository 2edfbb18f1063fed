"""Scheduler plug-ins: one module per serving engine, found and registered at import.

`SCHEDULERS` maps each `server.scheduler` name to its class (`sim.schedulers.base.Scheduler`).
A module of this package registers its classes with `@register`; every module here is imported
below, so a new engine is one module here and one config file (conf/server/scheduler/NAME.yaml).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

from sim.schedulers.base import Scheduler

S = TypeVar("S", bound=type[Scheduler])

SCHEDULERS: dict[str, type[Scheduler]] = {}


def register(cls: S) -> S:
    """Add a scheduler class to `SCHEDULERS` under its `name`."""
    if cls.name in SCHEDULERS:
        raise ValueError(f"scheduler {cls.name!r} is registered twice ({SCHEDULERS[cls.name]} and {cls})")
    SCHEDULERS[cls.name] = cls
    return cls


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

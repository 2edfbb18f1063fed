"""Scheduler plug-ins: one module per serving engine, found and registered at import.

`SCHEDULERS` maps each `server.scheduler` name to its class (`sim.schedulers.base.Scheduler`).
A module of this package registers its classes with `@register`; every module here is imported
below, so a new engine is one module here and one config file (conf/server/scheduler/NAME.yaml).
"""

from __future__ import annotations

import importlib
import pkgutil

from sim.registry import Registry
from sim.schedulers.base import Scheduler

SCHEDULERS: Registry[type[Scheduler]] = Registry("scheduler")  # name → its plug-in class
register = SCHEDULERS.register


for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

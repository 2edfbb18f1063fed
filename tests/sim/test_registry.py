"""sim.registry: plug-ins by name, listed in the order of their names whatever order they were
imported in (error messages and `--help` list them so)."""

from __future__ import annotations

import pkgutil

import pytest

from sim.registry import Registry
from sim.serving import routers
from sim.serving.routers import ROUTERS


def plugin(name: str) -> type:
    return type(name.title(), (), {"name": name})


def test_plugins_are_listed_by_name_not_by_registration():
    reg: Registry[type] = Registry("thing")
    for name in ("zeta", "alpha", "mu"):
        reg.register(plugin(name))
    assert list(reg) == ["alpha", "mu", "zeta"]


def test_a_name_registered_twice_is_refused():
    reg: Registry[type] = Registry("thing")
    reg.register(plugin("alpha"))
    with pytest.raises(ValueError, match="thing 'alpha' is registered twice"):
        reg.register(plugin("alpha"))


def test_every_router_module_registers_its_router_under_its_own_name():
    modules = [m.name for m in pkgutil.iter_modules(routers.__path__) if m.name != "base"]
    assert modules and sorted(modules) == list(ROUTERS)
    for name in modules:
        assert ROUTERS[name].__module__ == f"{routers.__name__}.{name}"

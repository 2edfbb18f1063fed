"""Request-shaping policies, one module each, found by name.

A policy module `sim/policies/<name>.py` defines a frozen dataclass `Config` (its parameters,
validated in `__post_init__`) and `build(config, context) -> Policy`; `conf/policy/<name>.yaml`
holds `name: <name>` and the parameters.

Another installed package can add policies: an entry point in the group `sweetspot_sim.policies`
(name → module with `Config` and `build`), and its `conf/policy/<name>.yaml` on Hydra's search
path (`hydra.searchpath=[pkg://theirpackage.conf]`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from sim.policies.base import (
    Decision,
    Policy,
    PolicyContext,
    Request,
    Shaping,
    Summarizer,
    unshaped,
)
from sim.schema import ConfigError, build

_NOT_POLICIES = {"base"}
ENTRY_POINTS = "sweetspot_sim.policies"

__all__ = [
    "Decision",
    "Policy",
    "PolicyContext",
    "Request",
    "Shaping",
    "Summarizer",
    "build_policy",
    "known_policies",
    "policy_config",
    "unshaped",
]


def _own() -> set[str]:
    return {m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_POLICIES}


def _plugins() -> dict[str, str]:
    """Policies of other installed packages: entry point name → module path."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINTS)}


def known_policies() -> list[str]:
    """Names of the policy modules in this package and of installed plugins."""
    return sorted(_own() | set(_plugins()))


def _module(name: str) -> Any:
    if name in _own():
        return importlib.import_module(f"{__name__}.{name}")
    return importlib.import_module(_plugins()[name])


def policy_config(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The validated Config of policy `name`; unknown names list the known ones."""
    known = known_policies()
    if name not in known:
        raise ConfigError(f"policy.name {name!r} is not a known policy; known: {known}")
    return build(_module(name).Config, params, prefix="policy")


def build_policy(name: str, params: Mapping[str, Any] | None, context: PolicyContext) -> Policy:
    """Validate the parameters and build policy `name` for this oracle and trace."""
    config = policy_config(name, params)
    return _module(name).build(config, context)

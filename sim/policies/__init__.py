"""Request-shaping policies, one module each, found by name.

A policy module `sim/policies/<name>.py` defines a frozen dataclass `Config` (its parameters,
validated in `__post_init__`) and `build(config, context) -> Policy`; `conf/policy/<name>.yaml`
holds `name: <name>` and the parameters.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from sim.config import ConfigError, build
from sim.policies.base import (
    Decision,
    Policy,
    PolicyContext,
    Request,
    Shaping,
    Summarizer,
    unshaped,
)

_NOT_POLICIES = {"base"}

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


def known_policies() -> list[str]:
    """Names of the policy modules in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_POLICIES)


def policy_config(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The validated Config of policy `name`; unknown names list the known ones."""
    known = known_policies()
    if name not in known:
        raise ConfigError(f"policy.name {name!r} is not a known policy; known: {known}")
    module = importlib.import_module(f"{__name__}.{name}")
    return build(module.Config, params, prefix="policy")


def build_policy(name: str, params: Mapping[str, Any] | None, context: PolicyContext) -> Policy:
    """Validate the parameters and build policy `name` for this oracle and trace."""
    config = policy_config(name, params)
    module = importlib.import_module(f"{__name__}.{name}")
    return module.build(config, context)

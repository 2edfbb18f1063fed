"""How a configuration is checked: `ConfigError` (the message names the key), `check`, and `build`,
which makes a typed dataclass from a plain mapping (unknown keys and wrong types name the key).

The bottom of every config schema (`sim.config`, the scheduler, policy and fleet plug-ins), so that
plug-ins can check their own settings without importing the configs that list them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


def check(ok: bool, key: str, message: str) -> None:
    """Raise ConfigError('<key> <message>') unless ok."""
    if not ok:
        raise ConfigError(f"{key} {message}")


def build(cls: type[T], values: Mapping[str, Any] | None, prefix: str) -> T:
    """Build dataclass `cls` from a plain mapping; unknown keys and wrong types name the key."""
    check(
        values is None or isinstance(values, Mapping),
        prefix,
        f"is a section of keys (set one as {prefix}.KEY=VALUE), not the value {values!r}",
    )
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    check(
        not unknown,
        f"{prefix}.{unknown[0]}" if unknown else prefix,
        f"is not a known key; known: {sorted(fields)}",
    )
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a simple type hint (int, float, bool, str, X | None, dict)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key) if len(inner) == 1 else value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    if origin is dict or hint is dict:
        check(isinstance(value, Mapping), key, f"must be a mapping, got {value!r}")
        return dict(value)
    if hint in (int, float, bool, str):
        check(False, key, f"must be of type {hint.__name__}, got {value!r}")
    return value

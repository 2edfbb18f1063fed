"""A registry of plug-in classes by name (schedulers, routers): what configs name and tests enumerate."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T", bound=type[Any])
C = TypeVar("C", bound=type[Any])


class Registry(dict[str, T]):
    """Plug-in classes keyed by their `name` attribute, in the order of their names (not of their
    import); `register` is the decorator that adds one."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def register(self, cls: C) -> C:
        """Add `cls` under `cls.name`; ValueError if that name is taken."""
        if cls.name in self:
            raise ValueError(f"{self.kind} {cls.name!r} is registered twice ({self[cls.name]} and {cls})")
        self[cls.name] = cls  # type: ignore[assignment]  # a subclass of T, as its use asserts
        entries = sorted(self.items())
        self.clear()
        self.update(entries)
        return cls

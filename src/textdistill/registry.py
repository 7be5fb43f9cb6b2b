"""A tiny typed registry: components are chosen by name in configs, never by import path."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from textdistill.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to components (classes or factories).

    Example:
        >>> LOSSES = Registry("loss")
        >>> @LOSSES.register("kd_kl")
        ... class KDKL: ...
        >>> LOSSES.get("kd_kl")
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; a duplicate name is a programming error."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """Return the component named ``name`` or raise a ConfigError with close matches."""
        if name not in self._items:
            raise ConfigError(self.unknown_message(name))
        return self._items[name]

    def unknown_message(self, name: object) -> str:
        """The message for an unknown name: valid choices and a 'did you mean'."""
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}.{hint}"

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

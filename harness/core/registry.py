"""A name → class registry filled by decorators (used for decoders and tasks)."""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from harness.core.errors import HarnessError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            setattr(obj, "name", name)
            return obj

        return decorate

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise HarnessError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def parse_list(self, names: str) -> list[str]:
        """Splits a comma-separated list and checks every name, so a typo fails before any work starts."""
        chosen = [n.strip() for n in names.split(",") if n.strip()]
        for name in chosen:
            self.get(name)
        return chosen

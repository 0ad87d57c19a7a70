"""One registry style for datasets, model kinds and unlearning methods.

Each kind of thing keeps a :class:`Registry`. Its module exposes a decorator that takes the entry's name
once, with its config dataclass, and registers the decorated function: a dataset's loader, a model kind's
builder, a method's update step. The UI, the CLI, the sweeps and the tests iterate ``list_*`` and look up
with ``get_*``; nothing else keeps a list of names.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order."""

    def __init__(self, what: str, error: type[Exception] = KeyError) -> None:
        self.what = what  # "unlearning method", "model kind", "dataset": used in messages
        self.error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T, replace: bool = False) -> T:
        if name in self._entries and not replace:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise self.error(f"unknown {self.what} {name!r}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name]

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[tuple[str, T]]:
        return iter(list(self._entries.items()))

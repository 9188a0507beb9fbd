"""Record: the base of the few plain-data classes made at every cold start (the request context,
a 2025 session, the stores, what an upstream speaks).

Why not dataclasses: a dataclass compiles its generated methods from source when its class is
made, 0.5-1 ms each on Python 3.13, which every cold start pays (README, performance). A record
writes its `__init__` out and lists its fields in `__slots__`, in order; equality, repr and
`replace` are derived from that list here, once.
"""

from typing import Any, Self


class Record:
    __slots__ = ()

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied (as `dataclasses.replace`); an unknown field is a TypeError."""
        copy = object.__new__(type(self))
        for name in self.__slots__:
            setattr(copy, name, changes.pop(name) if name in changes else getattr(self, name))
        if changes:  # what is left names no field
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(changes))}")
        return copy

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable: as a dataclass with eq, not hashable

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

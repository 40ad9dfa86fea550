"""The ops a program's requests run: one small frozen dataclass each, printed as code.

Data ops (get, set, del, pop, popitem, setdefault, update/|=, clear), a nested mutation
with or without ``modified = True``, set_expiry, ``owner =``, C-level snapshots, values
no store can keep, cycle_key/flush/save, the admin calls (revoke, revoke_all,
list_sessions) and a clock tick.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Op:
    """One thing a view does with its session (or, for the admin ops, with the store)."""

    touches_store = False

    def __str__(self) -> str:
        args = ", ".join(repr(getattr(self, f.name)) for f in fields(self))
        return f"{type(self).__name__.lower()}({args})"


@dataclass(frozen=True)
class Get(Op):
    key: str

    def __str__(self) -> str:
        return f"get {self.key}"


@dataclass(frozen=True)
class Set(Op):
    key: str
    value: Any

    def __str__(self) -> str:
        return f"{self.key} = {self.value!r}"


@dataclass(frozen=True)
class Del(Op):
    key: str

    def __str__(self) -> str:
        return f"del {self.key} (if present)"


@dataclass(frozen=True)
class Pop(Op):
    key: str

    def __str__(self) -> str:
        return f"pop {self.key}"


@dataclass(frozen=True)
class PopItem(Op):
    def __str__(self) -> str:
        return "popitem (if not empty)"


@dataclass(frozen=True)
class SetDefault(Op):
    key: str
    value: Any

    def __str__(self) -> str:
        return f"setdefault {self.key} {self.value!r}"


@dataclass(frozen=True)
class Update(Op):
    items: tuple[tuple[str, Any], ...]
    ior: bool

    def __str__(self) -> str:
        return f"{'|=' if self.ior else 'update'} {dict(self.items)!r}"


@dataclass(frozen=True)
class Clear(Op):
    def __str__(self) -> str:
        return "clear"


@dataclass(frozen=True)
class Nested(Op):
    """``session.get(key)`` then, if a list, append ``item``; if a dict, set its "n"."""

    key: str
    item: int
    mark_modified: bool

    def __str__(self) -> str:
        then = "; modified = True" if self.mark_modified else ""
        return f"nested {self.key} <- {self.item}{then}"


@dataclass(frozen=True)
class Snapshot(Op):
    """The data as C-level code sees it: ``kind`` is "dict", "deepcopy", "pickle" or
    "orjson" (DESIGN.md: "A Session is a real dict to C code too")."""

    kind: str

    def __str__(self) -> str:
        return f"snapshot via {self.kind}"


@dataclass(frozen=True)
class BadSet(Op):
    """Assign something no store can keep intact; it must raise TypeError and change
    nothing ("before any I/O, identically on every store")."""

    kind: str

    def __str__(self) -> str:
        key, value = BAD_VALUES[self.kind]
        return f"session[{key!r}] = {value!r} (must be refused)"


BAD_VALUES: dict[str, tuple[Any, Any]] = {
    "int key": (1, "x"),
    "lone surrogate": ("a", "\ud800"),
    "clashing keys": ("a", {1: "a", "1": "b"}),
    "a set": ("a", {1}),
    # Issue 22, defects 8 and 10: PostgreSQL's text cannot hold NUL (every store refuses
    # it alike), and a dict subclass with clashing keys would lose one of them.
    "NUL in the key": ("a\x00b", "x"),
    "clashing keys in an OrderedDict": ("a", OrderedDict([(1, "a"), ("1", "b")])),
    "clashing keys in a nested Counter": ("a", [Counter({1: 1, "1": 2})]),
}


@dataclass(frozen=True)
class SetExpiry(Op):
    """``kind``: "int" (seconds), "zero", "none", "timedelta" or "datetime" (seconds ahead)."""

    kind: str
    seconds: int

    def __str__(self) -> str:
        shown = {"zero": "0", "none": "None"}.get(self.kind, f"{self.kind} {self.seconds}")
        return f"set_expiry({shown})"


@dataclass(frozen=True)
class SetOwner(Op):
    owner: int | None

    def __str__(self) -> str:
        return f"owner = {'None' if self.owner is None else f'u{self.owner}'}"


@dataclass(frozen=True)
class CycleKey(Op):
    touches_store = True

    def __str__(self) -> str:
        return "await cycle_key()"


@dataclass(frozen=True)
class Flush(Op):
    touches_store = True

    def __str__(self) -> str:
        return "await flush()"


@dataclass(frozen=True)
class Save(Op):
    touches_store = True

    def __str__(self) -> str:
        return "await save()"


@dataclass(frozen=True)
class Revoke(Op):
    """Admin: revoke the session client ``client``'s cookie names now, as owner ``u<owner>``."""

    touches_store = True
    owner: int
    client: int

    def __str__(self) -> str:
        return f"await store.revoke(u{self.owner}, <session of client {self.client}>)"


@dataclass(frozen=True)
class RevokeAll(Op):
    touches_store = True
    owner: int
    keep_self: bool

    def __str__(self) -> str:
        keep = ", keep=<this session>" if self.keep_self else ""
        return f"await store.revoke_all(u{self.owner}{keep})"


@dataclass(frozen=True)
class ListSessions(Op):
    touches_store = True
    owner: int

    def __str__(self) -> str:
        return f"await store.list_sessions(u{self.owner})"


@dataclass(frozen=True)
class Tick(Op):
    seconds: int

    def __str__(self) -> str:
        return f"clock += {self.seconds}s"


@dataclass(frozen=True)
class Later(Op):
    """Change in place the list or dict the view last got or assigned under ``key`` (kept
    from an earlier op, not read again): append ``item``, or set its "n" (issue 22: a
    container held across ``await session.save()``)."""

    key: str
    item: int

    def __str__(self) -> str:
        return f"held {self.key} <- {self.item} (no new read)"

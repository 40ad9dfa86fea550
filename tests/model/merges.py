"""Issue 23 in the model: lists used as queues and counters, racing on the same keys.

The ops a view runs (appends through ``setdefault(key, [])``, front-consumes by
``pop(0)`` or a slice after reading, a mid-list edit, ``increment``), and the reference:
which pending changes a save sends as merges, and what a merge leaves in the store. It
is written on decoded values, independently of the library's text splicing
(``asgi_sessions.stores.base.merge_value``), so a store that splices wrongly diverges.

The model applies each merge when the store commits it, so its state is the serial order
of commits: the checks compare every key with it exactly, which also catches an append
kept twice or lost, and a consume that deletes what it never saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tests.model import ops as o

if TYPE_CHECKING:
    from tests.model.records import Held


def encoded(value: Any) -> str:
    """records.encoded (imported late: program.py, which records imports, imports this)."""
    from tests.model.records import encoded

    return encoded(value)


_MISSING: Any = object()


@dataclass(frozen=True)
class MergeOp(o.Op):
    """An issue-23 op (the harness runs it on the real session)."""


@dataclass(frozen=True)
class Append(MergeOp):
    """``session.setdefault(key, []).append(item)`` (nothing if it holds no list)."""

    key: str
    item: int

    def __str__(self) -> str:
        return f"setdefault {self.key} [] .append({self.item})"


@dataclass(frozen=True)
class Consume(MergeOp):
    """``v = session.get(key)``, then ``v.pop(0)`` (count 1) or ``del v[:count]``."""

    key: str
    count: int

    def __str__(self) -> str:
        return f"consume {self.count} from the front of {self.key}"


@dataclass(frozen=True)
class EditMid(MergeOp):
    """``v = session.get(key); v[len(v) // 2] = item``: last writer wins."""

    key: str
    item: int

    def __str__(self) -> str:
        return f"{self.key}[middle] = {self.item}"


@dataclass(frozen=True)
class Increment(MergeOp):
    key: str
    by: int

    def __str__(self) -> str:
        return f"increment {self.key} by {self.by}"


def local_ops(keys: tuple[str, ...]) -> list[tuple[int, list[o.Op]]]:
    """(weight, ops) rows for program.py's table; items are many, so each is traceable.

    All on the first key, so that requests race on it (with the other ops on all keys)."""
    key = keys[0]
    return [
        (6, [Append(key, item) for item in range(100, 200)]),
        (4, [Consume(key, count) for count in (1, 2)]),
        (1, [EditMid(key, item) for item in range(200, 210)]),
        (3, [Increment(key, by) for by in (1, 2, -1)]),
        (2, [o.Set(key, value) for value in ([300], [], [300, 301])]),
    ]


# A merge round (program.py): one client's requests all load the session before any of
# them saves, and change the same list (the first key) and counter (the second key).
# (weight, ops) rows as above; a setup request first stores one of ``ROUND_LISTS``.
ROUND_LISTS: tuple[list[int] | None, ...] = ([300, 301], [300, 301, 302], [300], [], None)


def round_ops(keys: tuple[str, ...]) -> list[tuple[int, list[o.Op]]]:
    queue, counter = keys[0], keys[1]
    return [
        (5, [Append(queue, item) for item in range(100, 200)]),
        (4, [Consume(queue, count) for count in (1, 2)]),
        (1, [o.Pop(queue)]),
        (1, [EditMid(queue, item) for item in range(200, 210)]),
        (1, [o.Set(queue, [300]), o.Set(queue, []), o.Set(counter, "x")]),
        (5, [Increment(counter, by) for by in (1, 2, -1)]),
        (1, [Increment(queue, 1)]),
    ]


# -- the real session (harness) -----------------------------------------------------


def run(op: MergeOp, session: Any) -> Any:
    if isinstance(op, Append):
        value = session.setdefault(op.key, [])
        if not isinstance(value, list):
            return "not a list"
        value.append(op.item)
        return None
    if isinstance(op, Increment):
        try:
            return session.increment(op.key, op.by)
        except TypeError:
            return "refused"
    value = session.get(op.key)
    if not isinstance(value, list):
        return "not a list"
    if isinstance(op, Consume):
        taken = value[: op.count]
        if op.count == 1 and value:
            value.pop(0)
        else:
            del value[: op.count]
        return taken
    if isinstance(op, EditMid) and value:
        value[len(value) // 2] = op.item
    return None


# -- the model's view ---------------------------------------------------------------


def apply(held: Held, op: o.Op) -> Any:
    """The model's side of any local op: view_ops, plus what issue 23 tracks."""
    from tests.model import view_ops

    if not isinstance(op, MergeOp):
        keys = _assigned_keys(op)
        absent = {key for key in keys if key not in held.local}
        result = view_ops.apply(held, op)
        _track(held, op, keys, absent)
        return result
    local = held.local
    if isinstance(op, Increment):
        current = local.get(op.key, 0)
        if type(current) is not int:
            return "refused"
        value = current + op.by
        if op.key in held.pending and op.key not in held.deltas:
            local[op.key] = value
            held.mark(op.key)
            return value
        local[op.key] = value
        held.deltas[op.key] = held.deltas.get(op.key, 0) + op.by
        held.mark(op.key)
        return value
    if isinstance(op, Append):
        absent = op.key not in local
        view_ops._apply(held, o.SetDefault(op.key, []))
        if absent:
            held.fresh.add(op.key)
        value = local[op.key]
        if not isinstance(value, list):
            return "not a list"
        value.append(op.item)
        return None
    view_ops._apply(held, o.Get(op.key))
    value = local.get(op.key)
    if not isinstance(value, list):
        return "not a list"
    if isinstance(op, Consume):
        taken = value[: op.count]
        del value[: op.count]
        return taken
    if isinstance(op, EditMid) and value:
        value[len(value) // 2] = op.item
    return None


def _assigned_keys(op: o.Op) -> tuple[str, ...]:
    if isinstance(op, o.Set | o.SetDefault | o.Del | o.Pop):
        return (op.key,)
    if isinstance(op, o.Update):
        return tuple(key for key, _ in op.items)
    return ()


def _track(held: Held, op: o.Op, keys: tuple[str, ...], absent: set[str]) -> None:
    if isinstance(op, o.Clear):
        held.deltas.clear()
        held.fresh.clear()
        return
    if isinstance(op, o.PopItem):
        return  # popitem_done() after the model learns which key went
    for key in keys:
        if key not in held.pending:
            continue  # nothing happened (a pop of a missing key, setdefault that found one)
        value = held.local.get(key, _MISSING)
        if isinstance(op, o.SetDefault) and key not in absent:
            continue
        if isinstance(op, o.Set | o.SetDefault | o.Update) and value == [] and key in absent:
            held.fresh.add(key)
            continue
        if isinstance(op, o.Del | o.Pop) and key in absent:
            continue
        held.deltas.pop(key, None)
        held.fresh.discard(key)


def popitem_done(held: Held, result: Any) -> None:
    if isinstance(result, list) and len(result) == 2 and isinstance(result[0], str):
        held.deltas.pop(result[0], None)
        held.fresh.discard(result[0])


# -- the save ------------------------------------------------------------------------


Merge = tuple[tuple[str, ...], tuple[str, ...]] | int


def _list_merge(held: Held, key: str) -> Merge | None:
    seen = held.seen.get(key)
    loaded = None
    if seen is not None:
        decoded = json.loads(seen)
        loaded = [encoded(item) for item in decoded] if type(decoded) is list else None
    fresh = key in held.fresh
    if fresh and loaded is None:
        loaded = []
    if loaded is None:
        return None
    value = held.local.get(key, _MISSING)
    if value is _MISSING:
        return (tuple(loaded), ())
    if type(value) is not list:
        return None
    now = [encoded(item) for item in value]
    if fresh:
        return (tuple(loaded), tuple(now)) if loaded or now else None
    n = len(loaded)
    for k in range(n + 1):
        if now[: n - k] == loaded[k:]:
            appended = now[n - k :]
            if k == n and n and appended:
                return None
            return (tuple(loaded[:k]), tuple(appended))
    raise AssertionError("unreachable")


def merges_of(held: Held, nested: set[str]) -> dict[str, Merge]:
    """The keys a save sends as merges (the rest: last writer wins)."""
    found: dict[str, Merge] = dict(held.deltas)
    for key in (held.pending | nested) - found.keys():
        if key in held.pending and key not in held.fresh and key in held.local:
            continue
        merge = _list_merge(held, key)
        if merge is not None:
            found[key] = merge
    return found


def applied(data: dict[str, Any], merges: dict[str, Merge]) -> None:
    """Apply ``merges`` to a record's decoded ``data`` in place, as a store must."""
    for key, merge in merges.items():
        stored = data.get(key, _MISSING)
        if isinstance(merge, int):
            if stored is _MISSING:
                data[key] = merge
            elif type(stored) is int:
                data[key] = stored + merge
            continue
        if stored is not _MISSING and type(stored) is not list:
            continue  # replaced meanwhile by a non-list: that write wins
        items = [] if stored is _MISSING else list(stored)
        seen, appended = merge
        texts = [encoded(item) for item in items]
        drop = 0
        for k in range(min(len(seen), len(items)), 0, -1):
            if list(seen[len(seen) - k :]) == texts[:k]:
                drop = k
                break
        items = items[drop:] + [json.loads(text) for text in appended]
        if items:
            data[key] = items
        else:
            data.pop(key, None)


def raced(stored: dict[str, Any], seen: dict[str, str], merging: dict[str, Merge]) -> list[str]:
    """Tally events: merges applied to a key another request changed since this one read
    it (appends, consumes and increments that raced on one key)."""
    kinds = []
    for key, merge in merging.items():
        now = encoded(stored[key]) if key in stored else None
        if now == seen.get(key):
            continue
        if isinstance(merge, int):
            kinds.append("raced-increment")
        else:
            if merge[1]:
                kinds.append("raced-append")
            if merge[0]:
                kinds.append("raced-consume")
    return kinds

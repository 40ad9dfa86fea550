"""Lifecycle events in the model: the handlers must see exactly the model's transitions.

The rules (rules.py) tell ``Lifecycle`` each transition as it applies it: a create, a
rotation or cluster move, an owner change written, a flush of a session the request
held, a revoke that ended something, a save or a load that found its record expired. The harness
registers a recording ``on_event`` handler and, after every round (retries included),
compares what each request's handlers saw with what the model expects, in order.

Faults (faults.py): the contract says a handler runs only after the store call returned.

- ``before``: nothing applied, nothing fires.
- ``after`` on a write, a rotation or flush's delete: applied, but the call raised, so the
  app cannot know; nothing fires (an unknown outcome is never reported; the client's
  retry, or the next request, finds the state and fires what it does itself).
- ``after`` on ``revoke`` / ``revoke_all``: the store method returned its count and fired
  ``revoked`` before the injected lost reply, which the harness raises outside the store
  method (scheduler.gate_store). A lost reply inside a real store raises before that and
  fires nothing; tests/behaviour/test_events.py covers a store call that raises.
- A store's own error that wins over an ``after`` fault (the record was gone): the step
  is as without the fault, and so are its events (``expired``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from asgi_sessions.events import store_kind
from asgi_sessions.stores.base import hash_key
from tests.model.scheduler import current_request

REVOKES = frozenset({"revoke", "revoke_all"})
# The stores whose every load of an expired record reports it (the record stays until a
# purge, or lives in the cookie).
EVERY_LOAD = frozenset({"sqlite", "postgres", "cookie"})

Expected = tuple[str, Any, Any, Any, Any, int]
"""(type, rid or None, owner, previous owner, previous rid, count)."""


class Lifecycle:
    """The events each request's handlers must have seen, by request number."""

    def __init__(self) -> None:
        self.expected: dict[int, list[Expected]] = defaultdict(list)
        self._owner_before: dict[int, str | None] = {}

    # -- what the rules report ---------------------------------------------------------

    def owner_set(self, req: Any) -> None:
        """Before ``session.owner = ...``: the first change since the last write is "from"."""
        if not req.held.owner_changed:
            self._owner_before[req.number] = req.held.owner

    def _add(
        self,
        req: Any,
        kind: str,
        rid: int | None,
        owner: str | None,
        *,
        previous_owner: str | None = None,
        previous_rid: int | None = None,
        count: int = 1,
    ) -> None:
        self.expected[req.number].append((kind, rid, owner, previous_owner, previous_rid, count))

    def wrote(self, req: Any, old_rid: int | None, new_rid: int, new_key: bool) -> None:
        """A create (``old_rid is None``) or a merge that left data; before ``consumed()``."""
        held = req.held
        if old_rid is None:
            self._add(req, "created", new_rid, held.owner)
        elif new_key:
            self._add(req, "rotated", new_rid, held.owner, previous_rid=old_rid)
        before = self._owner_before.get(req.number)
        if held.owner_changed and held.owner != before:
            self._add(req, "owner_changed", new_rid, held.owner, previous_owner=before)

    def ended(self, req: Any, kind: str, rid: int, owner: str | None) -> None:
        """``flushed`` / ``expired`` of the record the request held."""
        self._add(req, kind, rid, owner)

    def loaded_expired(self, req: Any, record: Any) -> bool:
        """A load met ``record`` past its end (not deleted): ``expired`` where the store
        tells expired from missing (README, "expired (load)"): SQLite, PostgreSQL and
        the cookie store (the signed cookie is the record) every time, memory while the
        record is still in its dict (any read of it, the checker's included, drops it),
        never on Redis (it deleted the record itself)."""
        if record.deleted or record.key is None:
            return False
        store = current_request.get().harness.store  # the request loading it, now
        kind = store_kind(store)
        if kind in EVERY_LOAD or (kind == "memory" and hash_key(record.key) in store._records):
            self._add(req, "expired", record.rid, record.owner)
            return True
        return False

    def revoked(self, req: Any, rid: int | None, owner: str | None, count: int) -> None:
        if count:
            self._add(req, "revoked", rid, owner, count=count)

    # -- faults ------------------------------------------------------------------------

    def mark(self, req: Any) -> int:
        return len(self.expected[req.number])

    def after_fault(self, req: Any, mark: int, method: str, kind: str) -> None:
        """Drop what a faulted step expected, unless it fires anyway (module docstring)."""
        if req.fault is None:
            return  # the store's own error won: the step is as without the fault
        if kind == "after" and method in REVOKES:
            return
        del self.expected[req.number][mark:]

    # -- comparing ---------------------------------------------------------------------

    def problems(
        self,
        seen: list[tuple[int, Any]],
        records: dict[int, Any],
        public_id: Callable[[str], str] | None,
    ) -> list[str]:
        """Compare the handlers' events (``(request number, SessionEvent)``) with the model's;
        both are consumed."""

        def pid(rid: int | None) -> Any:
            if rid is None or public_id is None:
                return None
            key = records[rid].key
            return public_id(key) if key is not None else _Unseen(rid)

        got: dict[int, list[tuple[Any, ...]]] = defaultdict(list)
        for number, event in seen:
            got[number].append(
                (
                    event.type,
                    event.public_id,
                    event.owner,
                    event.previous_owner,
                    event.previous_public_id,
                    event.count,
                )
            )
            if (event.scope is None) != (event.type == "revoked"):
                return [f"R{number}: {event.type} event with scope {event.scope!r}"]
        found = []
        for number in sorted(set(got) | set(self.expected)):
            wanted = [
                (kind, pid(rid), owner, before, pid(prev), count)
                for kind, rid, owner, before, prev, count in self.expected.get(number, [])
            ]
            if got.get(number, []) != wanted:
                found.append(
                    f"R{number}: handlers saw events {got.get(number, [])}, the model "
                    f"expects {wanted}"
                )
        seen.clear()
        self.expected.clear()
        return found


class _Unseen:
    """The public id of a record whose key no response ever showed (an import's K that a
    concurrent request rotated away before any cookie named it): any id matches, since
    the model cannot derive it; the event's type, owners and count are still compared."""

    def __init__(self, rid: int) -> None:
        self.rid = rid

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<#{self.rid}, key never seen>"

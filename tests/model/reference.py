"""The reference model: what ../notes/contract-v2.md says every step of a program does.

The harness tells the model what happens, in the order it happens: a request starts
(sending its client's cookie), loads, begins and ends each op, reaches the response. A
step the contract calls atomic (load, a save's merge, a rotation, a flush's delete, a
revoke, a listing) takes effect in the model when the request makes its store call for
that step (the scheduler lets only one request run, so store calls form one order), or,
if the implementation makes no call, when the step ends (nothing interleaves then). The
model predicts each op's result, each response's status and cookie, and the stored state;
the first mismatch is recorded as a divergence.

Where contract-v2 is silent, the model decides (each marked "decided" below):

1. ``cycle_key()`` marks the session modified, as in Django (so an empty session's dead
   cookie is deleted).
2. A request that wrote its record itself (create, explicit ``save()``, rotation) sets the
   cookie at the end even with nothing left pending; Max-Age counts from the response.
3. A write does not refresh the request's own view with other requests' keys.
4. After an expired save or a merge that left no data, the session is as after
   ``flush()`` without the delete: no key, no data, owner and expiry setting forgotten.
5. A rotation (``cycle_key()``, owner change) that finds its record gone follows the
   gone rules of a save.
6. A cookie is deleted only if the request carried one; a 400 or a 5xx response carries
   no Set-Cookie at all (nothing is saved, even after ``flush()``).
7. A renewal is due ``renew_interval`` after the session's last write, also a write this
   request made; an explicit ``save()`` writes nested changes whatever
   ``detect_nested_changes`` says (the app asked to save).
8. A Set-Cookie whose Max-Age is 0 or less counts as deleting the cookie.
9. A nested change is measured against the value's JSON when first handed out since the
   load or the request's last write; ``popitem()`` may take any present item; the order
   of ``list_sessions`` among equal creation times is open.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from tests.model import program as p
from tests.model.records import (
    Held,
    Record,
    browser_session,
    encode_setting,
    expires_at,
    renew_interval,
)

READS = frozenset({"load", "get"})


class Interrupted(Exception):
    """The model's ``SessionInterrupted``: a save found its record deleted meanwhile."""


@dataclass
class Outcome:
    status: int
    cookie: str  # "set" | "delete" | "keep"
    rid: int | None = None
    max_age: int | None = None

    def __str__(self) -> str:
        if self.cookie == "set":
            age = "no Max-Age" if self.max_age is None else f"Max-Age={self.max_age}"
            return f"{self.status}, Set-Cookie #{self.rid} ({age})"
        return f"{self.status}, cookie {'deleted' if self.cookie == 'delete' else 'untouched'}"


@dataclass
class Observed:
    """What the implementation showed for one response."""

    status: int
    cookie: str  # "set" | "delete" | "keep"
    key: str | None = None
    max_age: int | None = None

    def __str__(self) -> str:
        if self.cookie == "set":
            age = "no Max-Age" if self.max_age is None else f"Max-Age={self.max_age}"
            return f"{self.status}, Set-Cookie {short(self.key)} ({age})"
        return f"{self.status}, cookie {'deleted' if self.cookie == 'delete' else 'untouched'}"


def short(key: str | None) -> str:
    return "None" if key is None else f"<key {key[:6]}…>"


@dataclass
class RequestModel:
    number: int
    spec: p.Request
    held: Held = field(default_factory=Held)
    phase: str = "waiting"
    due: list[str] = field(default_factory=list)
    """Store effects the current phase still owes, in order ("load", "op", "finish")."""
    op: p.Op | None = None
    expected: Any = None
    expect_interrupted: bool = False
    cookie_rid: int | None = None
    had_cookie: bool = False
    loaded: bool = False
    modified: bool = False
    removal: bool = False
    """Flushed, expired or emptied: a cookie it carried must be deleted."""
    aborted: bool = False
    outcome: Outcome | None = None


class Model:
    def __init__(
        self,
        options: p.Options,
        clients: int,
        owner_names: list[str],
        *,
        cookie_store: bool,
        now: float,
        public_id: Callable[[str], str],
    ) -> None:
        self.options = options
        self.public_id = public_id
        self.owner_names = owner_names
        self.cookie_store = cookie_store
        self.now = now
        self.start = now
        self.records: dict[int, Record] = {}
        self.jars: list[int | None] = [None] * clients
        self.trace: list[str] = []
        self.divergences: list[str] = []
        self.events: Counter[str] = Counter()
        self._keys: set[str] = set()

    # -- bookkeeping ---------------------------------------------------------------------

    def note(self, line: str, event: str | None = None) -> None:
        """Trace ``line``; ``event`` counts a path of the contract the program reached."""
        self.trace.append(f"t+{self.now - self.start:g}s {line}")
        if event is not None:
            self.events[event] += 1

    def diverge(self, req: RequestModel | None, message: str) -> None:
        where = f"R{req.number}: " if req is not None else ""
        self.divergences.append(where + message)
        self.note(f"DIVERGENCE {where}{message}")

    def advance(self, seconds: int) -> None:
        self.now += seconds

    def owner_name(self, slot: int | None) -> str | None:
        return None if slot is None else self.owner_names[slot]

    def _new_record(
        self, data: dict[str, Any], owner: str | None, expiry: str | None, created: float
    ) -> Record:
        ends = expires_at(self.options, expiry, self.now, created)
        record = Record(len(self.records) + 1, data, owner, expiry, created, self.now, ends)
        self.records[record.rid] = record
        return record

    def bind(self, req: RequestModel, record: Record, key: str | None, where: str) -> None:
        """Learn (or check) the key the implementation uses for ``record``."""
        if record.key is not None:
            if key != record.key:
                self.diverge(req, f"{where}: key {short(key)}, expected {record.label()}'s key")
            return
        if key is None:
            self.diverge(req, f"{where}: no key, expected {record.label()} to have one")
            return
        # Cookie-store keys are the data itself: equal content may give an equal key.
        if key in self._keys and not self.cookie_store:
            self.diverge(req, f"{where}: {record.label()} got a key already used before")
        record.key = key
        self._keys.add(key)

    # -- the request's life --------------------------------------------------------------

    def start_request(self, req: RequestModel) -> None:
        """The request is sent, with its client's cookie as the jar holds it now."""
        req.cookie_rid = self.jars[req.spec.client]
        req.had_cookie = req.cookie_rid is not None
        sent = "no cookie" if req.cookie_rid is None else f"cookie #{req.cookie_rid}"
        self.note(f"R{req.number} starts ({sent})")
        if req.spec.touch:
            req.phase = "load"
            if req.had_cookie:
                req.due = ["load"]
            else:
                self._load(req)

    def store_call(self, req: RequestModel, method: str) -> None:
        """The request's store call ``method`` runs now: the step it belongs to takes effect."""
        if req.due and (req.due[0] == "load") == (method in READS):
            self._apply(req, req.due.pop(0))
        else:
            self.note(f"R{req.number} store.{method} (no step of the model)")

    def _settle(self, req: RequestModel) -> None:
        """The phase ends: effects it owes that no store call carried happen now."""
        while req.due:
            self._apply(req, req.due.pop(0))

    def _apply(self, req: RequestModel, effect: str) -> None:
        if effect == "load":
            self._load(req)
        elif effect == "op":
            try:
                req.expected = self._store_op(req, req.op)
            except Interrupted:
                req.expect_interrupted = True
                self.note(
                    f"R{req.number} {req.op}: record deleted meanwhile -> interrupted",
                    "interrupted",
                )
        else:
            self._finish(req)

    def _load(self, req: RequestModel) -> None:
        req.loaded = True
        held = req.held
        record = self.records.get(req.cookie_rid) if req.cookie_rid is not None else None
        if record is not None and record.alive(self.now):
            held.rid = record.rid
            held.local = copy.deepcopy(record.data)
            held.owner, held.expiry = record.owner, record.expiry
            held.known_expires_at = record.expires_at
            held.updated_at = record.updated_at
            self.note(f"R{req.number} loads {record.label()} {record.data}")
        else:
            self.note(f"R{req.number} loads a fresh session")

    def begin_op(self, req: RequestModel, op: p.Op) -> None:
        self._settle(req)
        req.phase, req.op, req.expected, req.expect_interrupted = "op", op, None, False
        if op.touches_store:
            req.due = ["op"]
        elif not isinstance(op, p.PopItem):
            req.expected = self._local_op(req, op)

    def end_op(
        self, req: RequestModel, result: Any, key: str | None, raised: BaseException | None
    ) -> None:
        self._settle(req)
        op = req.op
        if isinstance(op, p.PopItem):
            req.expected = self._popitem(req, result)
        if raised is not None:
            if not req.expect_interrupted:
                self.diverge(req, f"`{op}` raised {type(raised).__name__}: {raised}")
            req.aborted = True
            return
        if req.expect_interrupted:
            self.diverge(req, f"`{op}` returned; the model expects SessionInterrupted")
            req.aborted = True
            return
        if isinstance(op, p.ListSessions):
            problem = compare_listing(result, req.expected)
            if problem:
                self.diverge(req, f"`{op}` {problem}")
        elif result != req.expected:
            self.diverge(req, f"`{op}` gave {result!r}, the model expects {req.expected!r}")
        held = req.held
        if held.rid is None:
            if key is not None:
                self.diverge(req, f"after `{op}` session_key is {short(key)}, expected None")
        else:
            self.bind(req, self.records[held.rid], key, f"after `{op}` session_key")

    def begin_finish(self, req: RequestModel) -> None:
        self._settle(req)
        req.phase = "finish"
        if req.aborted:
            return
        renewing = (
            not req.spec.touch
            and req.had_cookie
            and self.options.save_every_request
            and req.spec.status < 500
        )
        req.due = ["load", "finish"] if renewing else ["finish"]

    def response(self, req: RequestModel, seen: Observed) -> None:
        self._settle(req)
        req.phase = "done"
        expected = req.outcome or Outcome(400 if req.aborted else req.spec.status, "keep")
        if expected.cookie == "set" and expected.max_age is not None and expected.max_age <= 0:
            expected = Outcome(expected.status, "delete")  # a browser drops it at once
        self.note(f"R{req.number} responds {seen} (model: {expected})")
        if seen.status != expected.status or seen.cookie != expected.cookie:
            self.diverge(req, f"response {seen}; the model expects {expected}")
            return
        client = req.spec.client
        if expected.cookie == "set":
            assert expected.rid is not None
            record = self.records[expected.rid]
            self.bind(req, record, seen.key, "Set-Cookie")
            if seen.max_age != expected.max_age:
                self.diverge(req, f"response {seen}; the model expects {expected}")
            self.jars[client] = expected.rid
        elif expected.cookie == "delete":
            self.jars[client] = None

    def crashed(self, req: RequestModel, exc: BaseException) -> None:
        self.diverge(req, f"the request raised {type(exc).__name__}: {exc} (no response)")

    # -- ops -----------------------------------------------------------------------------

    def _local_op(self, req: RequestModel, op: p.Op) -> Any:
        held, local = req.held, req.held.local
        touched = self._local_handlers.get(type(op))
        if touched is not None:
            return touched(self, req, op)
        if isinstance(op, p.Get):
            held.handout(op.key)
            return copy.deepcopy(local.get(op.key))
        if isinstance(op, p.Tick):
            self.advance(op.seconds)
            return None
        if isinstance(op, p.Snapshot):
            return copy.deepcopy(local)
        if isinstance(op, p.BadSet):
            return "refused"
        raise AssertionError(f"unknown op {op!r}")

    def _set(self, req: RequestModel, op: p.Set) -> Any:
        req.held.local[op.key] = copy.deepcopy(op.value)
        self._mark(req, op.key)

    def _del(self, req: RequestModel, op: p.Del) -> Any:
        if op.key not in req.held.local:
            return False
        del req.held.local[op.key]
        self._mark(req, op.key)
        return True

    def _pop(self, req: RequestModel, op: p.Pop) -> Any:
        if op.key not in req.held.local:
            return None
        self._mark(req, op.key)
        return req.held.local.pop(op.key)

    def _setdefault(self, req: RequestModel, op: p.SetDefault) -> Any:
        held = req.held
        if op.key in held.local:
            held.handout(op.key)
        else:
            held.local[op.key] = copy.deepcopy(op.value)
            self._mark(req, op.key)
        return copy.deepcopy(held.local[op.key])

    def _update(self, req: RequestModel, op: p.Update) -> Any:
        for key, value in op.items:
            req.held.local[key] = copy.deepcopy(value)
            self._mark(req, key)

    def _clear(self, req: RequestModel, op: p.Clear) -> Any:
        # "clear() = replace: drop every stored key, then write what is set after"
        held = req.held
        held.local.clear()
        held.pending.clear()
        held.replace = True
        req.modified = True

    def _nested(self, req: RequestModel, op: p.Nested) -> Any:
        held = req.held
        held.handout(op.key)
        value = held.local.get(op.key)
        kind = "other"
        if isinstance(value, list):
            value.append(op.item)
            kind = "list"
        elif isinstance(value, dict):
            value["n"] = op.item
            kind = "dict"
        if op.mark_modified:
            # "marks every PRESENT key as changed and keeps any deletions"
            held.all_present = True
            req.modified = True
        return kind

    def _set_expiry(self, req: RequestModel, op: p.SetExpiry) -> Any:
        req.held.expiry = encode_setting(op.kind, op.seconds, self.now)
        req.held.expiry_changed = True
        req.modified = True

    def _set_owner(self, req: RequestModel, op: p.SetOwner) -> Any:
        name = self.owner_name(op.owner)
        if name != req.held.owner:
            req.held.owner = name
            req.held.owner_changed = True
            req.modified = True

    _local_handlers: ClassVar[dict[type, Callable[..., Any]]] = {
        p.Set: _set,
        p.Del: _del,
        p.Pop: _pop,
        p.SetDefault: _setdefault,
        p.Update: _update,
        p.Clear: _clear,
        p.Nested: _nested,
        p.SetExpiry: _set_expiry,
        p.SetOwner: _set_owner,
    }

    def _mark(self, req: RequestModel, key: str) -> None:
        req.held.mark(key)
        req.modified = True

    def _popitem(self, req: RequestModel, result: Any) -> Any:
        """Which item popitem() takes depends on the store's key order, which the contract
        leaves open: accept any present item, then apply it as pop(key)."""
        local = req.held.local
        if not local:
            return None
        if isinstance(result, list) and len(result) == 2 and result[0] in local:
            if local[result[0]] == result[1]:
                del local[result[0]]
                self._mark(req, result[0])
                return result
        return f"one of {sorted(local.items())}"

    def _store_op(self, req: RequestModel, op: p.Op | None) -> Any:
        held = req.held
        if isinstance(op, p.Save):
            self._save(req, at_finish=False)
        elif isinstance(op, p.CycleKey):
            req.modified = True  # as in Django, where cycle_key() goes through create()
            if held.rid is None:
                if held.local:
                    self._create(req)
            else:
                self._merge(req, rotate=True)
        elif isinstance(op, p.Flush):
            if held.rid is not None and not self.cookie_store:
                self.records[held.rid].deleted = True
                self.note(f"R{req.number} flushes #{held.rid}", "flush")
            held.drop()
            req.removal = req.modified = True
        elif isinstance(op, p.Revoke):
            return self._revoke(req, op)
        elif isinstance(op, p.RevokeAll):
            return self._revoke_all(req, op)
        elif isinstance(op, p.ListSessions):
            return self.listing(self.owner_name(op.owner))
        else:
            raise AssertionError(f"unknown store op {op!r}")
        return None

    def revoke_target(self, client: int) -> int | None:
        return self.jars[client] if client < len(self.jars) else None

    def _revoke(self, req: RequestModel, op: p.Revoke) -> int:
        target = self.revoke_target(op.client)
        record = self.records.get(target) if target is not None else None
        owner = self.owner_name(op.owner)
        if record is not None and record.alive(self.now) and record.owner == owner:
            record.deleted = True
            self.note(f"R{req.number} revokes {record.label()}", "revoke")
            return 1
        return 0

    def _revoke_all(self, req: RequestModel, op: p.RevokeAll) -> int:
        keep = req.held.rid if op.keep_self else None
        owner = self.owner_name(op.owner)
        ended = 0
        for record in self.records.values():
            if record.alive(self.now) and record.owner == owner and record.rid != keep:
                record.deleted = True
                ended += 1
        self.note(
            f"R{req.number} revoke_all({owner}) ends {ended}", "revoke_all" if ended else None
        )
        return ended

    def listing(self, owner: str | None) -> list[list[Any]]:
        """list_sessions(owner): "exactly the alive records whose owner is `owner`, oldest
        first", as [public id, created, updated, expires] rows."""
        rows = [
            [self.public_id(r.key or "?"), r.created_at, r.updated_at, r.expires_at]
            for r in self.records.values()
            if r.alive(self.now) and r.owner == owner
        ]
        return sorted(rows, key=lambda row: row[1])

    # -- saving --------------------------------------------------------------------------

    def _finish(self, req: RequestModel) -> None:
        status = req.spec.status
        if status >= 500:
            req.outcome = Outcome(status, "keep")  # "not on 5xx"
            return
        if not req.loaded:
            req.outcome = Outcome(status, "keep")
            return
        try:
            self._save(req, at_finish=True)
        except Interrupted:
            self.note(f"R{req.number} save: record deleted meanwhile -> 400", "interrupted")
            req.outcome = Outcome(400, "keep")
            return
        req.outcome = self._cookie(req)

    def _cookie(self, req: RequestModel) -> Outcome:
        held = req.held
        if held.rid is not None and held.wrote:
            age = None
            if not browser_session(self.options, held.write_setting):
                age = round(held.write_expires_at - self.now)
            return Outcome(200, "set", held.rid, age)
        if held.rid is None and req.had_cookie and (req.modified or req.removal):
            return Outcome(200, "delete")
        return Outcome(200, "keep")

    def _save(self, req: RequestModel, *, at_finish: bool) -> None:
        held = req.held
        if held.rid is None:
            # "no key yet: empty -> nothing ... Non-empty -> create a record"
            if held.local:
                self._create(req)
            return
        # An explicit save() is "saving anyway": nested changes go with it whatever
        # detect_nested_changes says.
        pending = held.has_pending(self.options.detect_nested_changes or not at_finish)
        renewal = at_finish and not pending and self._renewal_due(held)
        if not (pending or renewal):
            return
        # "owner changed (and rotate_on_owner_change=True) -> the save is a rotation"
        rotate = held.owner_changed and self.options.rotate_on_owner_change and not held.rotated
        self._merge(req, rotate=rotate)

    def _renewal_due(self, held: Held) -> bool:
        # decided: due since the session's last write, also one this request made
        return self.options.save_every_request and self.now - held.updated_at >= renew_interval(
            self.options
        )

    def _create(self, req: RequestModel) -> None:
        held = req.held
        record = self._new_record(copy.deepcopy(held.local), held.owner, held.expiry, self.now)
        held.rid = record.rid
        self._wrote(req, record)
        self.note(
            f"R{req.number} creates {record.label()} {record.data} owner={record.owner}", "create"
        )

    def _merge(self, req: RequestModel, *, rotate: bool) -> None:
        """A merge (or, with ``rotate``, a rotation) into the request's record, atomically."""
        held = req.held
        assert held.rid is not None
        record = self.records[held.rid]
        if not record.alive(self.now):
            self._gone(req)
            return
        sets, removed = held.changes()
        changed = bool(sets or removed or held.replace or held.owner_changed or held.expiry_changed)
        data = {} if held.replace else copy.deepcopy(record.data)
        for key in removed:
            data.pop(key, None)
        data.update(sets)
        # "owner/expiry only if changed here"
        owner = held.owner if held.owner_changed else record.owner
        expiry = held.expiry if held.expiry_changed else record.expiry
        server = not self.cookie_store
        if rotate and server:
            record.deleted = True  # "the old key is dead from that instant"
        if not data:
            # "data empty after the merge -> record deleted, cookie deleted"
            if server:
                record.deleted = True
            held.drop()
            req.removal = True
            self.note(f"R{req.number} empties {record.label()}: deleted", "emptied")
            return
        if rotate or self.cookie_store:
            # A cookie-store write is a new cookie: the old one stays valid as it was.
            target = self._new_record(data, owner, expiry, record.created_at)
        else:
            target = record
            target.data, target.owner, target.expiry = data, owner, expiry
            target.updated_at = self.now
            target.expires_at = expires_at(self.options, expiry, self.now, record.created_at)
        held.rid = target.rid
        if rotate:
            held.rotated = True
        self._wrote(req, target)
        verb = "rotates into" if rotate else "writes"
        event = "rotate" if rotate else ("merge" if changed else "renewal")
        self.note(
            f"R{req.number} {verb} {target.label()} {target.data} owner={target.owner}", event
        )

    def _wrote(self, req: RequestModel, record: Record) -> None:
        held = req.held
        held.consumed()
        held.wrote = True
        held.updated_at = self.now
        held.write_expires_at = held.known_expires_at = record.expires_at
        held.write_setting = record.expiry

    def _gone(self, req: RequestModel) -> None:
        """contract-v2: a save whose record is gone."""
        if self.now >= req.held.known_expires_at:
            # "expired": nothing saved, local data dropped, cookie deleted
            self.note(f"R{req.number} save: record expired -> dropped", "expired")
            req.held.drop()
            req.removal = True
            return
        raise Interrupted


def compare_listing(seen: list[list[Any]], wanted: list[list[Any]]) -> str | None:
    """Same rows; oldest first (the contract leaves the order of equal creation times open)."""
    if sorted(seen) != sorted(wanted):
        return f"listed {seen}, the model has {wanted}"
    created = [row[1] for row in seen]
    if created != sorted(created):
        return f"not oldest first: {seen}"
    return None

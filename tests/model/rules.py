"""The contract's rules, as the model applies them: ops, saving, the stored state.

Each method encodes a rule of ../notes/contract-v2.md (quoted in comments). Where
contract-v2 is silent, the model decides:

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
   request made, with the interval capped at a tenth of the idle window of the setting
   the request knows (loaded, or its own write's); an explicit ``save()`` writes nested
   changes whatever ``detect_nested_changes`` says (the app asked to save).
8. A Set-Cookie whose Max-Age is 0 or less counts as deleting the cookie.
9. A nested change is measured against the value's JSON when first handed out since the
   load, or as the request's last write wrote it (a container handed out or assigned
   before a write stays watched after it); ``popitem()`` may take any present item; the
   order of ``list_sessions`` among equal creation times is open.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.model import merges, view_ops
from tests.model import ops as o
from tests.model import program as p
from tests.model.events import Lifecycle
from tests.model.records import (
    Held,
    Record,
    browser_session,
    encoded,
    expires_at,
    renew_interval,
    user_agent,
)


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
class RequestModel:
    number: int
    spec: p.Request
    held: Held = field(default_factory=Held)
    phase: str = "waiting"
    due: list[str] = field(default_factory=list)
    """Store effects the current phase still owes, in order ("load", "op", "finish")."""
    op: o.Op | None = None
    expected: Any = None
    expect_interrupted: bool = False
    cookie_rid: int | None = None
    had_cookie: bool = False
    loaded: bool = False
    removal: bool = False
    """Flushed, expired or emptied: a cookie it carried must be deleted."""
    aborted: bool = False
    outcome: Outcome | None = None
    target: int | None = None
    """The record a revoke op names, fixed when the op begins."""
    moved: bool = False
    """Its last merge was a store's move to the owner's slot (a cluster): the store wrote
    under a new key, or ended the record, and a lost reply leaves either unknown."""
    fault: str | None = None
    """The store fault this request met ("before"/"after"; faults.py): it answers 503."""
    pair_stage: bool = False
    """Loading through a fault's pair cookie: the new key was missing, the old is next."""
    imp: Any = None
    """Sent an old library's cookie: its import, step by step (imports.py)."""


class Rules:
    """The stored state (records, clients' cookie jars, the clock) and the rules that
    change it; ``Model`` adds the request lifecycle the harness reports."""

    def __init__(
        self,
        options: p.Options,
        clients: int,
        owner_names: list[str],
        *,
        cookie_store: bool,
        now: float,
        public_id: Callable[[str], str],
        owner_slots: bool = False,
    ) -> None:
        self.options = options
        self.public_id = public_id
        self.owner_slots = owner_slots
        """Keys carry their owner's slot (Redis Cluster, redis_layout.py): a session that
        gets an owner whose slot its key is not in moves to a new key, whatever
        rotate_on_owner_change says (and the session has not rotated by itself)."""
        self.owner_names = owner_names
        self.cookie_store = cookie_store
        self.now = now
        self.start = now
        self.records: dict[int, Record] = {}
        self.jars: list[int | None] = [None] * clients
        self.trace: list[str] = []
        self.events: Counter[str] = Counter()
        self.lifecycle = Lifecycle()
        """The lifecycle events the app's handlers must see (events.py)."""

    def note(self, line: str, event: str | None = None) -> None:
        """Trace ``line``; ``event`` counts a path of the contract the program reached."""
        self.trace.append(f"t+{self.now - self.start:g}s {line}")
        if event is not None:
            self.events[event] += 1

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

    # -- ops -----------------------------------------------------------------------------

    def _local_op(self, req: RequestModel, op: o.Op) -> Any:
        if isinstance(op, o.Tick):
            self.advance(op.seconds)
            return None
        if isinstance(op, o.SetOwner):
            self.lifecycle.owner_set(req)
            return view_ops.set_owner(req.held, self.owner_name(op.owner))
        if isinstance(op, o.SetExpiry):
            return view_ops.set_expiry(req.held, op, self.now)
        return merges.apply(req.held, op)

    def _store_op(self, req: RequestModel, op: o.Op | None) -> Any:
        held = req.held
        if isinstance(op, o.Save):
            self._save(req, at_finish=False)
        elif isinstance(op, o.CycleKey):
            req.held.modified = True  # as in Django, where cycle_key() goes through create()
            if held.rid is None:
                if held.local:
                    self._create(req)
            else:
                self._merge(req, rotate=True)
        elif isinstance(op, o.Flush):
            if held.rid is not None:
                self.lifecycle.ended(req, "flushed", held.rid, held.owner)
            if held.rid is not None and not self.cookie_store:
                self.records[held.rid].deleted = True
                self.note(f"R{req.number} flushes #{held.rid}", "flush")
            held.drop()
            req.removal = req.held.modified = True
        elif isinstance(op, o.Revoke):
            return self._revoke(req, op)
        elif isinstance(op, o.RevokeAll):
            return self._revoke_all(req, op)
        elif isinstance(op, o.ListSessions):
            return self.listing(self.owner_name(op.owner))
        else:
            raise AssertionError(f"unknown store op {op!r}")
        return None

    def revoke_target(self, client: int) -> int | None:
        """The session client ``client``'s cookie names now."""
        return self.jars[client] if client < len(self.jars) else None

    def _revoke(self, req: RequestModel, op: o.Revoke) -> int:
        target = req.target  # named when the op began, as the view computes its public id
        record = self.records.get(target) if target is not None else None
        owner = self.owner_name(op.owner)
        if record is not None and record.alive(self.now) and record.owner == owner:
            record.deleted = True
            self.note(f"R{req.number} revokes {record.label()}", "revoke")
            self.lifecycle.revoked(req, record.rid, owner, 1)
            return 1
        return 0

    def _revoke_all(self, req: RequestModel, op: o.RevokeAll) -> int:
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
        self.lifecycle.revoked(req, None, owner, ended)
        return ended

    def listing(self, owner: str | None) -> list[list[Any]]:
        """list_sessions(owner): "exactly the alive records whose owner is `owner`, oldest
        first", as [public id, created, updated, expires, user agent] rows."""
        rows = [
            [self.public_id(r.key or "?"), r.created_at, r.updated_at, r.expires_at, r.device]
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
        if held.rid is None and req.had_cookie and (req.held.modified or req.removal):
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
        self._merge(req, rotate=rotate, move=self._leaves_slot(held))

    def _leaves_slot(self, held: Held) -> bool:
        if not (self.owner_slots and held.owner_changed and held.owner is not None):
            return False
        return held.rid is not None and held.owner != self.records[held.rid].slot_owner

    def _renewal_due(self, held: Held) -> bool:
        # decided: due since the session's last write, also one this request made; the
        # interval is this session's own (its setting as the request knows it: issue 22)
        setting = held.write_setting if held.wrote else held.expiry  # the stored one, as known
        interval = renew_interval(self.options, setting)
        return self.options.save_every_request and self.now - held.updated_at >= interval

    def _create(self, req: RequestModel) -> None:
        held = req.held
        record = self._new_record(copy.deepcopy(held.local), held.owner, held.expiry, self.now)
        record.slot_owner = held.owner
        # "record the device at creation and at each owner change" (issue 25)
        record.device = None if held.owner is None else user_agent(req.number)
        held.seen.update((key, encoded(value)) for key, value in held.local.items())
        held.rid = record.rid
        self.lifecycle.wrote(req, None, record.rid, new_key=False)
        self._wrote(req, record)
        self.note(
            f"R{req.number} creates {record.label()} {record.data} owner={record.owner}", "create"
        )

    def _merge(self, req: RequestModel, *, rotate: bool, move: bool = False) -> None:
        """A merge into the request's record, atomically; with ``rotate`` (the session's
        rotation) or ``move`` (the store's, to the owner's slot) under a new key."""
        held = req.held
        assert held.rid is not None
        record = self.records[held.rid]
        if not record.alive(self.now):
            self._gone(req)
            return
        sets, removed = held.changes()
        merging = {}
        if not (self.cookie_store or held.replace):
            merging = merges.merges_of(held, held.nested_changes())
            for key in merging:
                sets.pop(key, None)
                removed.discard(key)
        changed = bool(
            sets or removed or merging or held.replace or held.owner_changed or held.expiry_changed
        )
        data = {} if held.replace else copy.deepcopy(record.data)
        for key in removed:
            data.pop(key, None)
        data.update(sets)
        for kind in merges.raced(record.data, held.seen, merging):
            self.events[kind] += 1
        merges.applied(data, merging)
        if merging:
            self.note(f"R{req.number} merges {merging}", "merge-same-key")
        for key in (*sets, *merging):
            if key in held.local:
                held.seen[key] = encoded(held.local[key])
            else:
                held.seen.pop(key, None)
        # "owner/expiry only if changed here"
        owner = held.owner if held.owner_changed else record.owner
        expiry = held.expiry if held.expiry_changed else record.expiry
        # The device goes with the owner: this request's when it stored one, else kept.
        device = record.device
        if held.owner_changed:
            device = None if owner is None else user_agent(req.number)
        server = not self.cookie_store
        new_key = rotate or move
        req.moved = move and server
        if new_key and server:
            record.deleted = True  # "the old key is dead from that instant"
        if not data:
            # "data empty after the merge -> record deleted, cookie deleted"
            if server:
                record.deleted = True
            held.drop()
            req.removal = True
            self.note(f"R{req.number} empties {record.label()}: deleted", "emptied")
            return
        if new_key or self.cookie_store:
            # A cookie-store write is a new cookie: the old one stays valid as it was.
            target = self._new_record(data, owner, expiry, record.created_at)
            target.slot_owner = owner if held.owner_changed and owner else record.slot_owner
        else:
            target = record
            target.data, target.owner, target.expiry = data, owner, expiry
            target.updated_at = self.now
            target.writes += 1
            target.expires_at = expires_at(self.options, expiry, self.now, record.created_at)
        target.device = device
        held.rid = target.rid
        if rotate:
            held.rotated = True
        self.lifecycle.wrote(req, record.rid, target.rid, new_key=new_key and server)
        self._wrote(req, target)
        verb = "rotates into" if rotate else ("moves into" if move else "writes")
        event = "rotate" if rotate else ("move" if move else ("merge" if changed else "renewal"))
        self.note(
            f"R{req.number} {verb} {target.label()} {target.data} owner={target.owner}", event
        )

    def _wrote(self, req: RequestModel, record: Record) -> None:
        held = req.held
        held.consumed()
        held.wrote = True
        held.updated_at = self.now
        held.writes = record.writes
        held.write_expires_at = held.known_expires_at = record.expires_at
        held.write_setting = record.expiry

    def _gone(self, req: RequestModel) -> None:
        """contract-v2: a save whose record is gone."""
        if self.now >= req.held.known_expires_at:
            # "expired": nothing saved, local data dropped, cookie deleted
            self.note(f"R{req.number} save: record expired -> dropped", "expired")
            if req.held.rid is not None:
                self.lifecycle.ended(req, "expired", req.held.rid, req.held.owner)
            req.held.drop()
            req.removal = True
            return
        raise Interrupted

"""The reference model: what ../notes/contract-v2.md says every step of a program does.

The harness tells the model what happens, in the order it happens: a request starts
(sending its client's cookie), loads, begins and ends each op, reaches the response. A
step the contract calls atomic (load, a save's merge, a rotation, a flush's delete, a
revoke, a listing) takes effect in the model when the request makes its store call for
that step (the scheduler lets only one request run, so store calls form one order), or,
if the implementation makes no call, when the step ends (nothing interleaves then). The
model predicts each op's result, each response's status and cookie, and the stored state;
the first mismatch is recorded as a divergence.

The rules themselves (and what the model decided where the contract is silent) are in
rules.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.model import faults, merges, rolling, view_ops
from tests.model import ops as o
from tests.model import program as p
from tests.model.records import Record
from tests.model.rules import Interrupted, Outcome, RequestModel, Rules

READS = frozenset({"load", "get"})


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


class Model(Rules):
    """The rules, driven by what the harness reports, compared with what it observes."""

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
        super().__init__(
            options,
            clients,
            owner_names,
            cookie_store=cookie_store,
            now=now,
            public_id=public_id,
            owner_slots=owner_slots,
        )
        self.divergences: list[str] = []
        self.faulted: dict[int, int] = {}
        """Client -> the request whose fault's 503 set (or kept) its cookie last."""
        self.retried: set[int] = set()
        """Clients whose retry, after a fault, answered 200 having loaded the session."""
        self._keys: set[str] = set()
        self.activity = rolling.Activity()
        self.imports: Any = None
        """imports.Imports when the program has old sessions."""

    def diverge(self, req: RequestModel | None, message: str) -> None:
        where = f"R{req.number}: " if req is not None else ""
        self.divergences.append(where + message)
        self.note(f"DIVERGENCE {where}{message}")

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
        if self.imports is not None and self.imports.starts(req):
            return  # an old library's cookie: imports.py runs the load
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

    def steps_on(self, req: RequestModel, method: str) -> bool:
        """Whether the request's store call ``method`` carries a step of the model."""
        return bool(req.due) and (req.due[0] == "load") == (method in READS)

    def store_call(self, req: RequestModel, method: str, fault: str | None = None) -> None:
        """The request's store call ``method`` runs now: the step it belongs to takes effect
        (or meets the ``fault`` the harness injects into the call: faults.py)."""
        if self.imports is not None and self.imports.store_call(req, method):
            return  # a step of an import (imports.py)
        if fault is not None:
            mark = self.lifecycle.mark(req)
            faults.apply_faulted(self, req, req.due.pop(0), method, fault)
            self.lifecycle.after_fault(req, mark, method, fault)
        elif req.due and (req.due[0] == "load") == (method in READS):
            self._apply(req, req.due.pop(0))
        else:
            self.note(f"R{req.number} store.{method} (no step of the model)")
            if method == "load" and req.phase == "finish" and isinstance(req.cookie_rid, int):
                # save_every_request loads an untouched session for a 5xx too (renewing
                # nothing): an expired record it meets is observed all the same.
                record = self.records[req.cookie_rid]
                if not record.alive(self.now):
                    self.lifecycle.loaded_expired(req, record)

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
        if isinstance(req.cookie_rid, tuple):
            faults.load_pending(self, req)  # the cookie a fault's 503 gave
            return
        req.loaded = True
        held = req.held
        record = self.records.get(req.cookie_rid) if req.cookie_rid is not None else None
        if record is not None and record.alive(self.now):
            held.rid = record.rid
            held.adopt(record.data)
            held.owner, held.expiry = record.owner, record.expiry
            held.known_expires_at = record.expires_at
            held.updated_at = record.updated_at
            held.writes = record.writes
            self.note(f"R{req.number} loads {record.label()} {record.data}")
        else:
            seen = record is not None and self.lifecycle.loaded_expired(req, record)
            self.note(f"R{req.number} loads a fresh session", "expired-load" if seen else None)

    def begin_op(self, req: RequestModel, op: o.Op) -> None:
        self._settle(req)
        req.phase, req.op, req.expected, req.expect_interrupted = "op", op, None, False
        if isinstance(op, o.Revoke):
            # The view turns the cookie into a public id now, before it calls the store.
            req.target = self.revoke_target(op.client)
        if op.touches_store:
            req.due = ["op"]
        elif not isinstance(op, o.PopItem):
            req.expected = self._local_op(req, op)

    def end_op(
        self, req: RequestModel, result: Any, key: str | None, raised: BaseException | None
    ) -> None:
        self._settle(req)
        op = req.op
        if isinstance(op, o.PopItem):
            req.expected = view_ops.popitem(req.held, result)
            merges.popitem_done(req.held, result)
        if raised is not None:
            if not req.expect_interrupted and req.fault is None:
                self.diverge(req, f"`{op}` raised {type(raised).__name__}: {raised}")
            req.aborted = True
            return
        if req.expect_interrupted:
            self.diverge(req, f"`{op}` returned; the model expects SessionInterrupted")
            req.aborted = True
            return
        if isinstance(op, o.ListSessions):
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
            and req.imp is None  # an old cookie is not ours: nothing to renew
            and self.options.save_every_request
            and req.spec.status < 500
        )
        req.due = ["load", "finish"] if renewing else ["finish"]

    def response(self, req: RequestModel, seen: Observed) -> None:
        self._settle(req)
        req.phase = "done"
        if req.fault is not None:
            faults.respond(self, req, seen)
            return
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
        problem = self.activity.responded(self, req, expected)
        if problem:
            self.diverge(req, problem)

    def _save(self, req: RequestModel, *, at_finish: bool) -> None:
        # A key derived from an old cookie serves one request: retired (imports.py).
        if at_finish and self.imports is not None and self.imports.retire(req):
            return
        super()._save(req, at_finish=at_finish)

    def _renewal_due(self, held: Any) -> bool:
        if self.imports is not None and not self.imports.renewal_allowed(held):
            return False  # the import just wrote it
        return super()._renewal_due(held)

    def crashed(self, req: RequestModel, exc: BaseException) -> None:
        self.diverge(req, f"the request raised {type(exc).__name__}: {exc} (no response)")


def compare_listing(seen: list[list[Any]], wanted: list[list[Any]]) -> str | None:
    """Same rows; oldest first (the contract leaves the order of equal creation times open)."""
    if sorted(seen) != sorted(wanted):
        return f"listed {seen}, the model has {wanted}"
    created = [row[1] for row in seen]
    if created != sorted(created):
        return f"not oldest first: {seen}"
    return None

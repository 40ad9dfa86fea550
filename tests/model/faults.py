"""Store faults whose outcome the app cannot know, and what the model says they leave.

A program may give a request a fault on its n-th store call after its load (a write or
an admin call: ``Request.fault``), and a round an outage that fails the round's n-th
store call, a load included, whoever makes it (``Round.outage``). Kinds:

- ``before``: the call raises without reaching the store (nothing applied);
- ``after``: the call runs, then raises (a lost reply, a timeout, ``WAIT`` failing): it
  applied, and nobody told the app;
- the outage: ``before`` on whichever request calls next ("fail on the next call only").

Faults hit every store call the model maps to a step: loads, creates, saves, rotations,
flush's delete, revokes, listings. The store wrapper (scheduler.gate_store) raises what
the real store raises there: ``OutcomeUnknown`` carrying the key tried for a create or a
rotation (a store's own ``attempting()``), else ``SessionStoreError``. The model knows
which fault it injected, so it stays deterministic: ``after`` applies the step,
``before`` rolls it back; either way the request answers 503, and its cookie is:

- a create's attempted key (``after``: the new record; ``before``: a key naming nothing);
- a rotation's (or a cluster move's, ``after``, even one that emptied the session) pair
  "new, else old";
- untouched otherwise.

A client whose request got a 503 from a fault retries it (same ops, no fault) right
after the round. After every round: a client that a fault answered still reaches its
session (the record that holds it, new or old, is the one its cookie resolves to), and
after a retry it holds a plain cookie again.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from asgi_sessions import SessionStoreError
from asgi_sessions.cookies import split_pending
from asgi_sessions.stores.base import Saved, attempting
from tests.model.rules import Outcome

KINDS = ("before", "after")
NEW_KEY_METHODS = frozenset({"create", "rotate"})


@dataclass
class Pending(Outcome):
    """A 503 whose cookie names a write of unknown outcome: ``old`` set for a pair."""

    new: int | None = None
    old: int | None = None

    def __str__(self) -> str:
        return _pending(self)


# -- the store side ---------------------------------------------------------------------


async def inject(
    method: str, kind: str, original: Callable[..., Awaitable[Any]], args: Any, kw: Any
) -> Any:
    """Run (or not) one store call and raise as a failed real store would."""
    if kind == "before":
        if method in NEW_KEY_METHODS:
            # The store minted a key, and its write failed: it cannot know more.
            with attempting(secrets.token_urlsafe(32)):
                raise SessionStoreError(f"model fault: {method} failed before applying")
        raise SessionStoreError(f"model fault: {method} failed before applying")
    result = await original(*args, **kw)
    message = f"model fault: {method} applied, then its reply was lost"
    if isinstance(result, Saved) and (method == "create" or result.key != args[0]):
        with attempting(result.key):
            raise SessionStoreError(message)
    raise SessionStoreError(message)


class Injector:
    """Decides, call by call, which store call of a round fails (the program says)."""

    def __init__(self) -> None:
        self.round_calls = 0
        self.outage: int | None = None

    def start_round(self, outage: int | None) -> None:
        self.round_calls, self.outage = 0, outage

    def decide(self, runner: Any, method: str, steps: bool) -> str | None:
        """The fault for this call of ``runner`` (``steps``: the model maps it to a step)."""
        self.round_calls += 1
        if method not in ("load", "get"):
            runner.calls = getattr(runner, "calls", 0) + 1
        if not steps or getattr(runner.model, "fault", None) is not None:
            return None
        fault = runner.spec.fault
        if fault is not None and fault[0] == getattr(runner, "calls", 0) and method != "load":
            return str(fault[1])
        if self.outage is not None and self.round_calls >= self.outage:
            self.outage = None
            return "before"
        return None


# -- the model side ---------------------------------------------------------------------


def apply_faulted(model: Any, req: Any, effect: str, method: str, kind: str) -> None:
    """The step ``effect`` meets a fault: applied (``after``) or not (``before``), then 503."""
    records = copy.deepcopy(model.records)
    held, removal = copy.deepcopy(req.held), req.removal
    before_rid = held.rid
    raised = model.events["interrupted"] + model.events["expired"]
    req.moved = False
    model._apply(req, effect)
    if kind == "after" and model.events["interrupted"] + model.events["expired"] != raised:
        return  # the store itself raised (record gone): that error wins, no fault fired
    new = [rid for rid in model.records if rid not in records]
    new_rid = new[0] if new else None
    # A cluster move that emptied the session made no record, but the store answered for
    # a new key all the same (stores/redis.py: save -> rotate).
    unknown = method in NEW_KEY_METHODS or (kind == "after" and (new_rid is not None or req.moved))
    if kind == "before":
        model.records.clear()
        model.records.update(records)
        req.held, req.removal = held, removal
        new_rid = None
    req.expect_interrupted = False
    req.due.clear()  # the request fails here: no later step of it happens
    req.fault = kind
    if unknown and method == "create":
        req.outcome = Pending(503, "set", new=new_rid)
    elif unknown:
        req.outcome = Pending(503, "set", new=new_rid, old=before_rid)
    else:
        req.outcome = Outcome(503, "keep")
    what = f"{req.outcome}" if not isinstance(req.outcome, Pending) else _pending(req.outcome)
    model.note(f"R{req.number} store.{method} fault {kind} -> {what}", f"fault-{kind}-{method}")


def _pending(outcome: Pending) -> str:
    new = "nothing" if outcome.new is None else f"#{outcome.new}"
    if outcome.old is None:
        return f"503, Set-Cookie attempted key ({new})"
    return f"503, Set-Cookie pair (new {new}, else #{outcome.old})"


def load_pending(model: Any, req: Any) -> None:
    """A load with a cookie a fault's 503 gave: a key naming nothing, or a pair."""
    jar = req.cookie_rid
    if jar[0] == "ghost":
        req.loaded = True
        model.note(f"R{req.number} loads a fresh session (the attempted key names nothing)")
        return
    _, new, old = jar
    if not req.pair_stage:
        record = model.records.get(new) if new is not None else None
        if record is None or not record.alive(model.now):
            req.pair_stage = True
            req.due.insert(0, "load")  # the old key is the next load
            return
        found = "new"
    else:
        record = model.records.get(old)
        found = "old"
    req.loaded = True
    if record is None or not record.alive(model.now):
        req.removal = True  # neither lives: the pair is deleted
        model.note(f"R{req.number} loads a fresh session (pair: neither key lives)", "pair-none")
        return
    held = req.held
    held.rid = record.rid
    held.adopt(record.data)
    held.owner, held.expiry = record.owner, record.expiry
    held.known_expires_at = record.expires_at
    held.updated_at = record.updated_at
    held.writes = record.writes
    # The pair lives one round trip: the response sets a plain cookie for what it found.
    held.wrote = True
    held.write_expires_at, held.write_setting = record.expires_at, record.expiry
    model.note(
        f"R{req.number} loads {record.label()} through the pair's {found} key", f"pair-{found}"
    )


def respond(model: Any, req: Any, seen: Any) -> None:
    """Check the 503 a fault caused, and put its cookie in the client's jar."""
    expected = req.outcome
    client = req.spec.client
    model.note(f"R{req.number} responds {seen} (model: fault, {expected})")
    if seen.status != 503 or seen.cookie != expected.cookie:
        model.diverge(
            req, f"response {seen}; after a {req.fault} fault the model expects {expected}"
        )
        return
    model.faulted[client] = req.number
    model.retried.discard(client)  # this fault's retry has yet to come
    if not isinstance(expected, Pending):
        return
    new_key, old_key = split_pending(seen.key or "")
    if (old_key is None) != (expected.old is None):
        model.diverge(req, f"response {seen}; the model expects {_pending(expected)}")
        return
    if expected.old is not None:
        old = model.records[expected.old]
        if old.key is not None and old_key != old.key:
            model.diverge(req, f"the pair's old key is not {old.label()}'s")
    if expected.new is not None:
        model.bind(req, model.records[expected.new], new_key, "503 Set-Cookie")
    if expected.old is not None:
        model.jars[client] = ("pair", expected.new, expected.old)
    else:
        model.jars[client] = expected.new if expected.new is not None else ("ghost",)


def reaches(model: Any, jar: Any) -> int | None:
    """The live record a cookie leads to (a pair: new, else old)."""
    if jar is None:
        return None
    rids = [jar] if isinstance(jar, int) else [rid for rid in jar[1:] if isinstance(rid, int)]
    for rid in rids:
        record = model.records.get(rid)
        if record is not None and record.alive(model.now):
            return int(rid)
    return None


async def problems(
    store: Any, model: Any, cookies: list[str | None], key_of: Callable[[str], str | None]
) -> list[str]:
    """After a round, in the real store: the cookie a fault left a client leads to the
    session the model says holds its data (new key, else old), never to a dead key while
    that session lives; a retried client holds a plain cookie again."""
    found = []
    for client, number in model.faulted.items():
        cookie = cookies[client]
        if cookie is None:
            continue
        key = key_of(cookie)
        if key is None:
            found.append(f"client {client} (503 of R{number}) holds a cookie that does not verify")
            continue
        new_key, old_key = split_pending(key)
        got, used = await store.get(new_key), new_key
        if got is None and old_key is not None:
            got, used = await store.get(old_key), old_key
        wanted = reaches(model, model.jars[client])
        if wanted is None:
            if got is not None:
                found.append(f"client {client}'s cookie reaches a session the model calls dead")
            continue
        record = model.records[wanted]
        if got is None:
            found.append(
                f"client {client} (503 of R{number}) holds a dead key while "
                f"{record.label()} lives under a key it cannot reach"
            )
        elif record.key is not None and used != record.key:
            found.append(f"client {client}'s cookie reaches another key than {record.label()}'s")
    for client in model.retried:
        # A pair must not outlive the retry that loaded through it. The attempted key of a
        # create that did not apply (a "ghost") is a plain cookie naming nothing, as any
        # unknown key is: a read-only request leaves it, as it leaves any unknown cookie.
        jar = model.jars[client]
        if isinstance(jar, tuple) and jar[0] == "pair":
            found.append(f"client {client} still holds a fault's cookie after its retry")
    return found

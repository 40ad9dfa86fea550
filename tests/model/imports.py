"""Imports in the model: clients that arrive with another library's session.

A program may start with old sessions (``Old``): a Starlette cookie (the data signed in
the cookie) or a starsessions cookie (an id; the data in the old store, here a dict
behind a fake Redis client). The clients in ``holders`` start with that cookie in their
jar (several holders: concurrent first requests with one cookie); a request with
``old=n`` sends old cookie ``n`` instead of its jar (a copy kept and replayed: after a
logout, after the window); ``fail_at=n`` makes the n-th store call of its import fail
(a transient outage, answered 503).

Who owns which data, at every step (asgi_sessions/importers.py, DESIGN.md "Importers"):

- the old data is released (starsessions: deleted) only in the step that writes the
  marker, or when a request reaches K afterwards: never before K and the marker exist;
- the old cookie reaches K only while K is untouched (``updated_at < created_at``), less
  than ``WINDOW`` seconds after its creation, and not re-created after the marker;
  otherwise a fresh session, and the old cookie is deleted;
- a request that comes back with our cookie naming K moves the session to a random key
  (retire on first use), so nothing written after the import is ever under K;
- a store failure changes nothing of the step that failed, and answers 503 with the
  old cookie kept, so a retry converges on the same K.

The model runs the import as the sequence of store calls the contract fixes (read the
marker; create K or find it; write the marker; ...), each taking effect when the request
makes that call, so concurrent first requests interleave exactly where the real ones do.
"""

from __future__ import annotations

import base64
import copy
import json
import secrets
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from hypothesis import strategies as st

if TYPE_CHECKING:
    from tests.model.rules import RequestModel

WINDOW = 30  # the contract's import window (asgi_sessions.importers.IMPORT_WINDOW)
ACCEPTS_FOR = 14 * 24 * 3600  # FromStarlette's default max_age
STARSESSIONS_LIFETIME = 3600
MARKER_DATA = {"_imported": True}
UNTOUCHED = 0.001  # K is written as if this long before its creation

_DATA = ((("a", 0),), (("a", "x"), ("b", [1])), (("b", 1),))


@dataclass(frozen=True)
class Old:
    """An old library's session that some clients hold at the start."""

    kind: str  # "starlette" | "starsessions"
    data: tuple[tuple[str, Any], ...]
    holders: tuple[int, ...]

    def __str__(self) -> str:
        held = ", ".join(f"client {c}" for c in self.holders) or "nobody (a copy only)"
        return f"{self.kind} session {dict(self.data)!r}, held by {held}"


@st.composite
def olds(draw: st.DrawFn, clients: int) -> tuple[Old, ...]:
    """Half the programs have none; the others one or two old sessions."""
    count = (0, 0, 1, 2)[draw(st.integers(0, 3))]
    found = []
    for _ in range(count):
        kind = ("starlette", "starsessions")[draw(st.integers(0, 1))]
        data = _DATA[draw(st.integers(0, len(_DATA) - 1))]
        first = draw(st.integers(0, clients))  # == clients: held by nobody
        holders = () if first == clients else (first,)
        if holders and clients > 1 and draw(st.integers(0, 1)):
            holders = (first, (first + 1) % clients)
        found.append(Old(kind, data, holders))
    return tuple(found)


def holders(olds: tuple[Old, ...]) -> set[int]:
    return {client for old in olds for client in old.holders}


def with_olds(program: Any, olds: tuple[Old, ...]) -> Any:
    """The program with its old sessions; each request's kept copy folded onto them."""

    def fold(request: Any) -> Any:
        old = None if not olds or request.old is None else request.old % len(olds)
        return replace(request, old=old)

    rounds = tuple(replace(r, requests=tuple(map(fold, r.requests))) for r in program.rounds)
    return replace(program, rounds=rounds, olds=olds)


# -- the harness side --------------------------------------------------------------------


class FakeStarsessions:
    """What ``FromStarsessions`` needs of a Redis client: get and delete over a dict."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, name: str) -> str | None:
        return self.data.get(name)

    async def delete(self, *names: str) -> int:
        return sum(self.data.pop(name, None) is not None for name in names)


@dataclass
class OldState:
    """One old session as the program runs: its cookie, its keys, what the model holds."""

    index: int
    spec: Old
    value: str
    k_key: str
    m_key: str
    marker_ends: float
    accepted_until: float
    """Starlette: the cookie's signature is accepted up to this moment (inclusive)."""
    name: str = ""
    """starsessions: the old store's key."""
    released: bool = False
    k_rid: int | None = None


def setup(harness: Any, tag: str) -> tuple[list[Any], list[OldState]]:
    """The importers for the middleware, and the old sessions with their cookies."""
    import itsdangerous

    from asgi_sessions import FromStarlette, FromStarsessions
    from asgi_sessions.importers import derived_key

    clock = harness.clock
    secret = f"old-secret-{tag}"

    class Signer(itsdangerous.TimestampSigner):
        ago = 0  # signed this many seconds ago: two old cookies never coincide

        def get_timestamp(self) -> int:
            return int(clock()) - self.ago

    fake = FakeStarsessions()
    harness.starsessions = fake
    from asgi_sessions.cookies import Signer as OurSigner
    from tests.support import SECRET

    ours = OurSigner([SECRET], salt="asgi_sessions.cookie").derive(b"asgi_sessions.import")[0]
    states = []
    for index, old in enumerate(harness.program.olds):
        data = {key: copy.deepcopy(value) for key, value in old.data}
        if old.kind == "starlette":
            payload = base64.b64encode(json.dumps(data).encode())
            signer = Signer(secret)
            signer.ago = index
            value = signer.sign(payload).decode()
            signed = float(int(clock()) - index)
            token, name = f"starlette:{value}", ""
            ends, until = signed + ACCEPTS_FOR + 1, signed + ACCEPTS_FOR
        else:
            value = secrets.token_hex(16)
            name = "starsessions." + value
            meta = {"created": clock(), "lifetime": STARSESSIONS_LIFETIME}
            fake.data[name] = json.dumps({**data, "__metadata__": meta})
            token, ends, until = f"starsessions:{value}", clock() + STARSESSIONS_LIFETIME, 0.0
        k_key = derived_key(ours, "import", token)
        m_key = derived_key(ours, "import-marker", token)
        states.append(OldState(index, old, value, k_key, m_key, ends, until, name))
    importers = [FromStarlette(secret, clock=clock), FromStarsessions(fake)]  # type: ignore[arg-type]
    return importers, states


# -- the model side ----------------------------------------------------------------------


@dataclass
class ImportRun:
    """One request's import, step by step (one step per store call)."""

    state: OldState
    fail_at: int | None
    step: str = "idle"
    vouched: bool = False
    calls: int = 0
    marked: Any = None
    fail_now: bool = False
    created: bool = False

    @property
    def active(self) -> bool:
        return self.step not in ("idle", "done")


READ = frozenset({"load", "get"})


@dataclass
class Imports:
    """The model's part for imports: old sessions, the derived keys, retiring them."""

    model: Any
    states: list[OldState]
    derived: set[int] = field(default_factory=set)

    def note(self, line: str, event: str | None = None) -> None:
        self.model.note(line, event)

    # -- a request starts -----------------------------------------------------------------

    def starts(self, req: RequestModel) -> bool:
        """Sends an old cookie (from its jar or a kept copy): the model takes over the load."""
        spec, model = req.spec, self.model
        jar = model.jars[spec.client]
        index = getattr(spec, "old", None)
        if index is None and isinstance(jar, int) and jar < 0:  # a pair jar is a tuple
            index = -jar - 1
        if index is None:
            return False
        state = self.states[index]
        # A fault the program puts on one of the import's store calls ("before": it fails
        # and changes nothing; faults.py leaves calls that carry no step of its own alone).
        fault = getattr(spec, "fault", None)
        run = ImportRun(state, fault[0] if fault and fault[1] == "before" else None)
        req.imp = run
        req.cookie_rid, req.had_cookie = -(index + 1), True
        self.note(f"R{req.number} starts (old {state.spec.kind} cookie o{index})")
        if spec.touch:
            req.phase = "load"
            if state.spec.kind == "starlette":
                run.vouched = model.now <= state.accepted_until
                if not run.vouched:  # too old: refused before any I/O
                    self._fresh(req, removal=False, why="too old to import")
                    return True
            else:
                run.vouched = not state.released
            run.step = "read marker"
        return True

    # -- each store call of the import ------------------------------------------------------

    def store_call(self, req: RequestModel, method: str) -> bool:
        run: ImportRun | None = req.imp
        if run is None or not run.active:
            return False
        run.calls += 1
        want_read = run.step in ("read marker", "find K", "reread marker", "read K")
        if want_read != (method in READ):
            self.model.diverge(
                req,
                f"import step `{run.step}`: store.{method}, the model expects a "
                f"{'read' if want_read else 'write'}",
            )
            run.step = "done"
            return True
        if run.fail_at == run.calls:
            run.fail_now = True
            run.step = "done"
            from tests.model.rules import Outcome

            req.outcome = Outcome(503, "keep")
            self.note(f"R{req.number} import step fails: 503, nothing of it done", "import-fail")
            return True
        getattr(self, "_" + run.step.replace(" ", "_"))(req, run)
        return True

    def _alive(self, rid: int | None) -> Any:
        record = self.model.records.get(rid) if rid is not None else None
        return record if record is not None and record.alive(self.model.now) else None

    def _marker(self, run: ImportRun) -> Any:
        for record in self.model.records.values():
            if record.key == run.state.m_key and record.alive(self.model.now):
                return record
        return None

    def _read_marker(self, req: RequestModel, run: ImportRun) -> None:
        run.marked = self._marker(run)
        if run.marked is not None:
            run.step = "read K"
        elif not run.vouched:
            self._fresh(req, removal=False, why="nothing vouches for it")
        else:
            run.step = "create K"

    def _create_K(self, req: RequestModel, run: ImportRun) -> None:
        state, model = run.state, self.model
        if self._alive(state.k_rid) is not None:
            run.step = "find K"
            return
        data = {key: copy.deepcopy(value) for key, value in state.spec.data}
        if state.k_rid is not None:
            # K again (the first one ended). A store knows a record by its key alone, so
            # whoever still holds the first one (a cookie naming K, a request that loaded
            # it and saves later) reaches this one: the model makes it the same record,
            # new again. It is handed out only when its creation ties with the marker's
            # time, which the model's whole-second clock allows and real clocks do not
            # (importers.py); else its creator deletes it ("delete K").
            from tests.model.records import expires_at

            record = model.records[state.k_rid]
            record.data, record.owner, record.expiry = data, None, None
            record.created_at = model.now
            record.expires_at = expires_at(model.options, None, model.now, model.now)
            record.deleted, record.device, record.slot_owner = False, None, None
            record.writes += 1
        else:
            record = model._new_record(data, None, None, model.now)
        record.updated_at = model.now - UNTOUCHED
        record.key = state.k_key
        state.k_rid = record.rid
        self.derived.add(record.rid)
        run.created = True
        run.step = "write marker"
        self.note(
            f"R{req.number} import creates {record.label()} {data} (K of o{state.index})",
            "import-create",
        )

    def _find_K(self, req: RequestModel, run: ImportRun) -> None:
        if self._alive(run.state.k_rid) is None:
            self._fresh(req, removal=True, why="K vanished")
        else:
            run.step = "write marker"

    def _write_marker(self, req: RequestModel, run: ImportRun) -> None:
        state, model = run.state, self.model
        if self._marker(run) is not None:
            run.step = "reread marker"
            return
        k_record = model.records[state.k_rid]
        if not run.created and k_record.updated_at >= k_record.created_at:
            self._fresh(req, removal=True, why="K was handed out and written (marker expired)")
        record = model._new_record(dict(MARKER_DATA), None, None, model.now)
        # As long as the importer accepts the cookie, and never less long than K.
        record.expires_at = max(state.marker_ends, k_record.expires_at)
        record.key = state.m_key
        self.note(f"R{req.number} marks o{state.index} imported ({record.label()})", "import-mark")
        if run.step != "done":
            self._adopt(req, run)

    def _reread_marker(self, req: RequestModel, run: ImportRun) -> None:
        run.marked = self._marker(run)
        if run.marked is None:
            self._fresh(req, removal=True, why="marker gone")
        else:
            run.step = "read K"

    def _read_K(self, req: RequestModel, run: ImportRun) -> None:
        record = self._alive(run.state.k_rid)
        now = self.model.now
        if run.created and record is not None and record.created_at > run.marked.created_at:
            # Made by this request after a concurrent import had already ended its K: the
            # importer deletes it, so nobody is ever handed it.
            run.step = "delete K"
        elif record is None:
            self._fresh(req, removal=True, why="K is gone (logged out, retired or expired)")
        elif record.updated_at >= record.created_at:
            self._fresh(req, removal=True, why=f"{record.label()} was written since the import")
        elif now - record.created_at >= WINDOW:
            self._fresh(req, removal=True, why="past the import window")
        elif record.created_at > run.marked.created_at:
            self._fresh(req, removal=True, why="K re-created after the import")
        else:
            self._adopt(req, run)

    def _delete_K(self, req: RequestModel, run: ImportRun) -> None:
        record = self.model.records[run.state.k_rid]
        record.deleted = True
        why = f"K re-created after the import: {record.label()} deleted"
        self._fresh(req, removal=True, why=why)

    def _adopt(self, req: RequestModel, run: ImportRun) -> None:
        state = run.state
        record = self.model.records[state.k_rid]
        if run.vouched and state.spec.kind == "starsessions" and not state.released:
            state.released = True
            self.note(f"R{req.number} releases o{state.index}'s old record", "import-release")
        held = req.held
        held.rid = record.rid
        held.adopt(record.data)
        held.owner, held.expiry = record.owner, record.expiry
        held.known_expires_at = held.write_expires_at = record.expires_at
        held.write_setting = record.expiry
        held.updated_at = record.updated_at
        held.writes = record.writes
        held.wrote = True  # the response sets our cookie
        held.imported = True  # type: ignore[attr-defined]  # no renewal in this request
        req.loaded = True
        run.step = "done"
        self.note(
            f"R{req.number} loads {record.label()} {record.data} via o{state.index}", "import-adopt"
        )

    def _fresh(self, req: RequestModel, *, removal: bool, why: str) -> None:
        req.loaded = True
        req.removal = removal  # an old cookie that imported nothing (any more) is deleted
        if removal:
            req.held.imported = True  # type: ignore[attr-defined]
        req.imp.step = "done"
        self.note(f"R{req.number} gets a fresh session: {why}", "import-fresh" if removal else None)

    # -- retire on first use ----------------------------------------------------------------

    def retire(self, req: RequestModel) -> bool:
        """At the response: loaded through our cookie naming K -> rotate (True: done)."""
        held, model = req.held, self.model
        if (
            req.imp is not None
            or held.rid is None
            or held.rid != req.cookie_rid
            or held.rid not in self.derived
            or held.rotated
        ):
            return False
        from tests.model.rules import Interrupted

        pending = held.has_pending(True)
        try:
            model._merge(req, rotate=True, move=model._leaves_slot(held))
        except Interrupted:
            if pending:
                raise
            self.note(f"R{req.number} retire: K moved by another request first", "retire-lost")
            # The store refused it (faults.py tells a store's own error from an injected
            # one by this count).
            model.events["interrupted"] += 1
            return True
        self.note(f"R{req.number} retires K", "retire")
        return True

    def renewal_allowed(self, held: Any) -> bool:
        return not getattr(held, "imported", False)

    # -- after each round ---------------------------------------------------------------------

    def problems(self, fake: FakeStarsessions) -> list[str]:
        """The old store holds exactly the old records the model has not released."""
        found = []
        for state in self.states:
            if state.spec.kind != "starsessions":
                continue
            there = state.name in fake.data
            if there == state.released:
                found.append(
                    f"old session o{state.index}: the old store "
                    f"{'still holds' if there else 'lost'} it; the model has it "
                    f"{'released' if state.released else 'in place'}"
                )
        return found

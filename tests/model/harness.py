"""Runs a program through the real ``SessionMiddleware`` and tells the model what happened.

Each request is a hand-built HTTP scope sent straight to the middleware (no HTTP client),
around a raw ASGI app that awaits the session and runs the request's ops, with a gate
before each op and before the response. After every round the store is compared with the
model: every record the model knows (``store.get``), every owner's listing, and the
store's own integrity audit.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from asgi_sessions import SessionEvent, SessionEvents, SessionMiddleware, Store
from asgi_sessions.stores.base import hash_key, public_id_for
from tests.clock import FakeClock
from tests.model import faults, imports, merges, view_ops
from tests.model import ops as o
from tests.model import program as p
from tests.model.checks import listing_rows, store_problems
from tests.model.records import user_agent
from tests.model.reference import Model, Observed, RequestModel
from tests.model.scheduler import Parked, Scheduler, current_request
from tests.support import SECRET

NOBODY = "0" * 24  # a public id no session has
_MAX_AGE = re.compile(r";\s*max-age=(-?\d+)", re.IGNORECASE)


def public_id(key: str) -> str:
    return public_id_for(hash_key(key))


class Runner(Parked):
    """One request of a round: its task, its gates, its model."""

    def __init__(self, harness: Harness, number: int, spec: p.Request) -> None:
        super().__init__(number, spec.client, spec.delay_at)
        self.harness = harness
        self.spec = spec
        self.model = RequestModel(number, spec)
        self.refs: dict[str, Any] = {}
        """The lists and dicts the view holds, by key (view_ops.remember)."""

    async def gate(self, label: str, *, moves_clock: bool = False) -> None:
        await self.harness.scheduler.gate(self, label, moves_clock=moves_clock)

    def store_call(self, method: str) -> str | None:
        model = self.harness.model
        fault = self.harness.injector.decide(self, method, model.steps_on(self.model, method))
        model.store_call(self.model, method, fault)
        imp = self.model.imp
        if imp is not None and imp.fail_now:  # a store failure during an import
            imp.fail_now = False
            return "before"
        return fault

    async def _run(self) -> None:
        current_request.set(self)
        await self.gate("start")
        harness = self.harness
        harness.model.start_request(self.model)
        cookie = harness.jars[self.spec.client]
        if self.spec.old is not None and harness.olds:
            cookie = harness.olds[self.spec.old].value  # a kept copy of an old cookie
        # Each request names itself in its user agent: the model checks that a listing
        # shows the device of the request that stored the owner (issue 25).
        headers = [(b"user-agent", user_agent(self.number).encode())]
        if cookie is not None:
            headers.append((b"cookie", f"session={cookie}".encode()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000 + self.number),
            "server": ("testserver", 80),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                harness.responded(self, message)

        try:
            await harness.middleware(scope, receive, send)
        except Exception as exc:
            harness.model.crashed(self.model, exc)

    async def run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug in the harness or the model (not the middleware: _run catches that)
            # must fail the program, never vanish with the cancelled task.
            self.harness.model.diverge(
                self.model, f"the harness itself failed: {type(exc).__name__}: {exc}"
            )

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        model, session = self.harness.model, scope["session"]
        if self.spec.touch:
            await session
            for index, op in enumerate(self.spec.ops, 1):
                await self.gate(f"op {index} `{op}`", moves_clock=isinstance(op, o.Tick))
                model.begin_op(self.model, op)
                try:
                    if isinstance(op, o.Later):
                        result = view_ops.change_in_place(self.refs, op)
                    else:
                        result = await self.harness.execute(op, session)
                        view_ops.remember(self.refs, op, lambda key: dict.get(session, key))
                except Exception as exc:
                    model.end_op(self.model, None, None, exc)
                    raise
                model.end_op(self.model, result, session.session_key, None)
        await self.gate("respond")
        model.begin_finish(self.model)
        # One header list for every response of the program, as a Response object reused
        # across requests has: the middleware must add its headers to a copy.
        headers = self.harness.shared_headers
        await send({"type": "http.response.start", "status": self.spec.status, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})


async def _dispatch(scope: dict[str, Any], receive: Any, send: Any) -> None:
    runner = current_request.get()
    assert isinstance(runner, Runner)
    await runner.app(scope, receive, send)


class Harness:
    def __init__(
        self,
        store: Store,
        clock: FakeClock,
        program: p.Program,
        *,
        tag: str,
        accepted: frozenset[str],
    ) -> None:
        self.store = store
        self.clock = clock
        self.program = program
        self.cookie_store = store.keeps_data_in_cookie
        options = program.options.middleware_kwargs(accepted)
        self.olds: list[imports.OldState] = []
        if program.olds:
            options["import_from"], self.olds = imports.setup(self, tag)
        # Every event the app's handlers see, with the request it came from (events.py).
        self.seen_events: list[tuple[int, SessionEvent]] = []
        events = SessionEvents(on_event=self._record_event)
        self.middleware = SessionMiddleware(
            _dispatch, secret_key=SECRET, store=store, events=events, **options
        )
        self.owner_names = [f"{tag}u{slot}" for slot in range(p.OWNER_SLOTS)]
        self.model = Model(
            program.options,
            program.clients,
            self.owner_names,
            cookie_store=self.cookie_store,
            now=clock.now,
            public_id=public_id,
            # Redis Cluster keys carry their owner's slot (asgi_sessions/stores/redis_layout.py).
            owner_slots=bool(getattr(getattr(store, "layout", None), "cluster", False)),
        )
        self.jars: list[str | None] = [None] * program.clients
        if self.olds:
            self.model.imports = imports.Imports(self.model, self.olds)
            for state in self.olds:
                for client in state.spec.holders:
                    self.jars[client] = state.value
                    self.model.jars[client] = -(state.index + 1)
        self.shared_headers = [(b"content-type", b"text/plain")]
        self.scheduler = Scheduler()
        self.injector = faults.Injector()

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        number = 0
        for round_ in self.program.rounds:
            self.clock.advance(round_.pause)
            self.model.advance(round_.pause)
            self.injector.start_round(round_.outage)
            runners = []
            for spec in round_.requests:
                number += 1
                runners.append(Runner(self, number, spec))
            await self.scheduler.run(
                [(runner, runner.run) for runner in runners],
                one_at_a_time_per_client=self.cookie_store,
                stop=lambda: bool(self.model.divergences),
            )
            if self.model.divergences:
                return
            number = await self._retry(runners, number)
            if self.model.divergences:
                return
            self._check_events()
            if self.model.divergences:
                return
            await self.check_store()
            if self.model.divergences:
                return

    async def _record_event(self, event: SessionEvent) -> None:
        runner = current_request.get()
        self.seen_events.append((runner.number if runner is not None else 0, event))

    def _check_events(self) -> None:
        ids = None if self.cookie_store else public_id
        for problem in self.model.lifecycle.problems(self.seen_events, self.model.records, ids):
            self.model.diverge(None, f"events: {problem}")

    async def _retry(self, runners: list[Runner], number: int) -> int:
        """A client whose request a store fault answered with 503 sends it again at once
        (same ops, no fault): the retry converges (faults.py)."""
        self.injector.start_round(None)
        for failed in runners:
            if failed.model.fault is None:
                continue
            number += 1
            retry = Runner(self, number, replace(failed.spec, fault=None, delays=()))
            self.model.note(f"R{number} retries R{failed.number}", "retry")
            await self.scheduler.run(
                [(retry, retry.run)],
                one_at_a_time_per_client=self.cookie_store,
                stop=lambda: bool(self.model.divergences),
            )
            seen = getattr(retry, "seen", None)
            latest = self.model.faulted.get(failed.spec.client) == failed.number
            if seen is not None and seen.status == 200 and retry.model.loaded and latest:
                # The retry of the client's latest fault (an earlier one's retry proves
                # nothing about the cookie a later fault gave).
                self.model.retried.add(failed.spec.client)
            if self.model.divergences:
                break
        return number

    async def execute(self, op: o.Op, session: Any) -> Any:
        """Do ``op`` on the real session (or store); return what the model predicts."""
        if isinstance(op, merges.MergeOp):
            return merges.run(op, session)
        if isinstance(op, o.Get):
            return copy.deepcopy(session.get(op.key))
        if isinstance(op, o.Set):
            session[op.key] = copy.deepcopy(op.value)
        elif isinstance(op, o.Del):
            if op.key not in session:
                return False
            del session[op.key]
            return True
        elif isinstance(op, o.Pop):
            return copy.deepcopy(session.pop(op.key, None))
        elif isinstance(op, o.PopItem):
            if not len(session):
                return None
            key, value = session.popitem()
            return [key, copy.deepcopy(value)]
        elif isinstance(op, o.SetDefault):
            return copy.deepcopy(session.setdefault(op.key, copy.deepcopy(op.value)))
        elif isinstance(op, o.Update):
            items = {key: copy.deepcopy(value) for key, value in op.items}
            if op.ior:
                session |= items
            else:
                session.update(items)
        elif isinstance(op, o.Clear):
            session.clear()
        elif isinstance(op, o.Nested):
            return self._nested(op, session)
        elif isinstance(op, o.SetExpiry):
            session.set_expiry(self._expiry_value(op))
        elif isinstance(op, o.SetOwner):
            session.owner = self.model.owner_name(op.owner)
        elif isinstance(op, o.Snapshot):
            return _snapshot(op.kind, session)
        elif isinstance(op, o.BadSet):
            key, value = o.BAD_VALUES[op.kind]
            try:
                session[key] = value
            except TypeError:
                return "refused"
            return "accepted"
        elif isinstance(op, o.Tick):
            self.clock.advance(op.seconds)  # the model moved its own clock in begin_op
        else:
            return await self._execute_io(op, session)
        return None

    async def _execute_io(self, op: o.Op, session: Any) -> Any:
        store, owner_name = self.store, self.model.owner_name
        if isinstance(op, o.CycleKey):
            await session.cycle_key()
        elif isinstance(op, o.Flush):
            await session.flush()
        elif isinstance(op, o.Save):
            await session.save()
        elif isinstance(op, o.Revoke):
            return await store.revoke(owner_name(op.owner), self._public_id_of_client(op.client))
        elif isinstance(op, o.RevokeAll):
            key = session.session_key
            keep = public_id(key) if op.keep_self and key is not None else None
            return await store.revoke_all(owner_name(op.owner), keep=keep)
        elif isinstance(op, o.ListSessions):
            return listing_rows(await store.list_sessions(owner_name(op.owner)))
        else:
            raise AssertionError(f"unknown op {op!r}")
        return None

    @staticmethod
    def _nested(op: o.Nested, session: Any) -> str:
        value = session.get(op.key)
        kind = "other"
        if isinstance(value, list):
            value.append(op.item)
            kind = "list"
        elif isinstance(value, dict):
            value["n"] = op.item
            kind = "dict"
        if op.mark_modified:
            session.modified = True
        return kind

    def _expiry_value(self, op: o.SetExpiry) -> Any:
        if op.kind == "int":
            return op.seconds
        if op.kind == "zero":
            return 0
        if op.kind == "none":
            return None
        if op.kind == "timedelta":
            return timedelta(seconds=op.seconds)
        return datetime.fromtimestamp(self.clock.now + op.seconds, UTC)

    def _public_id_of_client(self, client: int) -> str:
        cookie = self.jars[client] if client < len(self.jars) else None
        key = self._key_of(cookie) if cookie is not None else None
        return NOBODY if key is None else public_id(key)

    def _key_of(self, cookie: str) -> str | None:
        verified = self.store.verify_cookie(cookie, self.middleware.config.signer)
        return None if verified is None else verified[0]

    # -- responses -----------------------------------------------------------------------

    def responded(self, runner: Runner, message: dict[str, Any]) -> None:
        seen = runner.seen = self._observe(message)
        self.model.response(runner.model, seen)
        client = runner.spec.client
        if seen.cookie == "set":
            self.jars[client] = self._raw_cookie(message)
        elif seen.cookie == "delete":
            self.jars[client] = None

    def _session_cookies(self, message: dict[str, Any]) -> list[str]:
        return [
            value.decode("latin-1")
            for name, value in message.get("headers", [])
            if name.lower() == b"set-cookie" and value.startswith(b"session=")
        ]

    def _raw_cookie(self, message: dict[str, Any]) -> str:
        header = self._session_cookies(message)[0]
        return header[len("session=") :].split(";", 1)[0]

    def _observe(self, message: dict[str, Any]) -> Observed:
        status = message["status"]
        cookies = self._session_cookies(message)
        if not cookies:
            return Observed(status, "keep")
        if len(cookies) > 1:
            return Observed(status, f"{len(cookies)} session cookies")
        value = cookies[0][len("session=") :].split(";", 1)[0]
        found = _MAX_AGE.search(cookies[0])
        max_age = int(found[1]) if found else None
        if value in ("", '""') or (max_age is not None and max_age <= 0):
            return Observed(status, "delete")
        key = self._key_of(value)
        return Observed(status, "set", key if key is not None else "<unreadable>", max_age)

    async def check_store(self) -> None:
        for problem in await store_problems(self.store, self.model):
            self.model.diverge(None, problem)
        if self.olds:
            for problem in self.model.imports.problems(self.starsessions):
                self.model.diverge(None, problem)
        # A client still holding an old library's cookie holds none of ours (imports.py).
        olds = {state.value for state in self.olds}
        jars = [None if cookie in olds else cookie for cookie in self.jars]
        for problem in await faults.problems(self.store, self.model, jars, self._key_of):
            self.model.diverge(None, f"after a fault: {problem}")


def _snapshot(kind: str, session: Any) -> dict[str, Any]:
    if kind == "dict":
        seen = dict(session)
    elif kind == "orjson":
        seen = orjson.loads(orjson.dumps(session))
    else:
        pickled = pickle.dumps(session) if kind == "pickle" else b""
        copied = pickle.loads(pickled) if pickled else copy.deepcopy(session)  # noqa: S301
        # What C code finds in the copy, whatever its type.
        seen = {key: dict.__getitem__(copied, key) for key in dict.keys(copied)}
    return copy.deepcopy(seen)

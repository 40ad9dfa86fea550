"""Lifecycle events: each row of the README's event table, on every store it names.

Rows (README "Events and telemetry"): created, owner_changed, rotated, flushed, revoked,
expired (a load or a save that finds it expired; clear_expired batches), and what never
fires (a write that raised, a 400, a 503, a 5xx response) and what a handler's failure does.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from asgi_sessions import (
    Session,
    SessionEvent,
    SessionEvents,
    SessionMiddleware,
    SessionStoreError,
    Store,
    store_from_url,
)
from asgi_sessions.cli import main
from asgi_sessions.cookies import Signer
from asgi_sessions.events import store_kind
from asgi_sessions.stores.base import hash_key, public_id_for
from tests.clock import FakeClock
from tests.support import SECRET, app_with, client_for, encoded, sent, session_write

KINDS = ("created", "owner_changed", "rotated", "flushed", "revoked", "expired")


class Recorder:
    """Handlers that record every event, by the specific handler and by ``on_event``."""

    def __init__(self, *, strict: bool = False, fail: bool = False) -> None:
        self.seen: list[SessionEvent] = []
        self.specific: list[str] = []
        self.fail = fail

        def specific(kind: str) -> Any:
            async def handler(event: SessionEvent) -> None:
                assert event.type == kind
                self.specific.append(kind)
                if self.fail:
                    raise RuntimeError("handler failed")

            return handler

        self.events = SessionEvents(
            **{f"on_{kind}": specific(kind) for kind in KINDS},
            on_event=self._any,
            strict=strict,
        )

    async def _any(self, event: SessionEvent) -> None:
        self.seen.append(event)

    def kinds(self) -> list[str]:
        return [event.type for event in self.seen]

    def clear(self) -> None:
        self.seen.clear()
        self.specific.clear()


async def sign_in(session: Session, request: Request) -> Any:
    session["user"] = request.query_params.get("as", "ada")
    session.owner = request.query_params.get("as", "ada")
    await session.save()  # the event fires here, before the view answers
    return {"public_id": session.public_id}


async def touch(session: Session, request: Request) -> Any:
    session["n"] = session.get("n", 0) + 1
    return {"public_id": session.public_id}  # saved (and created) as the response starts


def public_id_of(store: Store, cookie: str) -> str | None:
    if store.keeps_data_in_cookie:
        return None
    verified = store.verify_cookie(cookie, Signer([SECRET], salt="asgi_sessions.cookie"))
    assert verified is not None
    return public_id_for(hash_key(verified[0]))


async def sign_out(session: Session, request: Request) -> Any:
    await session.flush()
    return {}


async def rotate(session: Session, request: Request) -> Any:
    await session.cycle_key()
    return {"public_id": session.public_id}


def app(store: Store, recorder: Recorder, **options: Any) -> Any:
    handlers = {"in": sign_in, "touch": touch, "out": sign_out, "rotate": rotate}
    return app_with(store, handlers, events=recorder.events, **options)  # type: ignore[arg-type]


async def test_created_fires_once_after_the_store_committed_with_no_key(
    any_store: Store,
) -> None:
    recorder = Recorder()
    async with client_for(app(any_store, recorder)) as client:
        response = await client.post("/touch")
        assert recorder.kinds() == ["created"]
        assert recorder.specific == ["created"]
        event = recorder.seen[0]
        assert response.json()["public_id"] is None  # not stored yet while the view ran
        assert event.public_id == public_id_of(any_store, response.cookies["session"])
        assert event.store == store_kind(any_store)
        assert event.owner is None
        assert event.scope is not None and event.scope["path"] == "/touch"
        assert response.cookies["session"].split(".")[0] not in repr(event)
        recorder.clear()
        await client.post("/touch")  # a merge: no event
        assert recorder.kinds() == []


async def test_owner_changed_fires_for_sign_in_switch_and_sign_out(any_store: Store) -> None:
    recorder = Recorder()

    async def leave(session: Session, request: Request) -> Any:
        session.owner = None
        return {}

    application = app_with(
        any_store,
        {"in": sign_in, "leave": leave},
        events=recorder.events,
        rotate_on_owner_change=False,
    )
    async with client_for(application) as client:
        await client.post("/in?as=ada")
        assert [(e.type, e.previous_owner, e.owner) for e in recorder.seen] == [
            ("created", None, "ada"),
            ("owner_changed", None, "ada"),
        ]
        recorder.clear()
        await client.post("/in?as=bob")
        changes = [(e.type, e.previous_owner, e.owner) for e in recorder.seen]
        # The cookie store's every write is a new cookie, but never a "rotation"; a Redis
        # Cluster store moves the session into its new owner's slot, which is one.
        moved = [("rotated", None, "bob")] if any_store.new_key_on_owner_change else []
        assert changes == [*moved, ("owner_changed", "ada", "bob")]
        recorder.clear()
        await client.post("/leave")
        assert [(e.type, e.previous_owner, e.owner) for e in recorder.seen] == [
            ("owner_changed", "bob", None)
        ]


async def test_rotated_fires_for_cycle_key_and_owner_change_rotation(store: Store) -> None:
    recorder = Recorder()
    async with client_for(app(store, recorder)) as client:
        first = public_id_of(store, (await client.post("/touch")).cookies["session"])
        recorder.clear()
        second = (await client.post("/rotate")).json()["public_id"]
        assert [(e.type, e.previous_public_id, e.public_id) for e in recorder.seen] == [
            ("rotated", first, second)
        ]
        recorder.clear()
        third = (await client.post("/in?as=ada")).json()["public_id"]
        assert [(e.type, e.public_id) for e in recorder.seen] == [
            ("rotated", third),
            ("owner_changed", third),
        ]
        assert recorder.seen[0].previous_public_id == second


async def test_flushed_fires_on_logout_and_twice_for_two_concurrent_logouts(
    any_store: Store,
) -> None:
    recorder = Recorder()
    arrived: list[int] = []
    both_loaded = asyncio.Event()

    async def slow_out(session: Session, request: Request) -> Any:
        arrived.append(1)
        if len(arrived) == 2:
            both_loaded.set()
        await both_loaded.wait()
        await session.flush()
        return {}

    handlers = {"in": sign_in, "out": sign_out, "slow_out": slow_out}
    async with client_for(app_with(any_store, handlers, events=recorder.events)) as client:
        response = await client.post("/in")
        public_id = response.json()["public_id"]
        recorder.clear()
        await client.post("/out")
        assert [(e.type, e.public_id, e.owner) for e in recorder.seen] == [
            ("flushed", public_id, "ada")
        ]
        recorder.clear()
        await client.post("/out")  # the cookie is gone: no session, nothing flushed
        assert recorder.seen == []
        cookie = (await client.post("/in")).cookies["session"]
        recorder.clear()
        # Two requests (two processes, two tabs) that both loaded the session log it out:
        # the store cannot tell the second delete from the first, so it is seen twice.
        await asyncio.gather(
            client.post("/slow_out", headers=sent(cookie)),
            client.post("/slow_out", headers=sent(cookie)),
        )
        assert recorder.kinds() == ["flushed", "flushed"]


async def test_revoked_fires_with_the_count_outside_requests(store: Store) -> None:
    recorder = Recorder()
    async with client_for(app(store, recorder)) as client:
        ids = []
        for _ in range(3):
            client.cookies.clear()
            ids.append((await client.post("/in?as=ada")).json()["public_id"])
    recorder.clear()
    assert await store.revoke("ada", ids[0]) == 1
    assert [(e.type, e.public_id, e.owner, e.count, e.scope) for e in recorder.seen] == [
        ("revoked", ids[0], "ada", 1, None)
    ]
    assert await store.revoke("ada", ids[0]) == 0
    assert await store.revoke_all("ada", keep=ids[1]) == 1
    assert await store.revoke_all("nobody") == 0
    assert [(e.type, e.public_id, e.count) for e in recorder.seen] == [
        ("revoked", ids[0], 1),
        ("revoked", None, 1),
    ]


async def test_expired_fires_for_a_save_that_finds_it_expired_and_for_purges(
    store: Store, clock: FakeClock
) -> None:
    recorder = Recorder()
    async with client_for(app(store, recorder, max_age=100)) as client:
        public_id = public_id_of(store, (await client.post("/touch")).cookies["session"])

        async def later(session: Session, request: Request) -> Any:
            # Loaded while alive, saved after its end: the save finds it expired.
            session["late"] = True
            clock.advance(200)
            return {}

        recorder.clear()
        late = app_with(store, {"late": later}, events=recorder.events, max_age=100)
        cookie = client.cookies["session"]
        async with client_for(late) as other:
            await other.post("/late", headers=sent(cookie))
        assert [(e.type, e.public_id) for e in recorder.seen] == [("expired", public_id)]
        client.cookies.clear()
        await client.post("/touch")
        clock.advance(200)
    recorder.clear()
    removed = await store.clear_expired()
    if removed:
        assert [(e.type, e.public_id, e.count) for e in recorder.seen] == [
            ("expired", None, removed)
        ]
    else:
        # Redis expires records by itself: nothing to purge, nothing observed.
        assert store_kind(store) == "redis"
        assert recorder.seen == []


async def test_expired_fires_for_a_load_that_finds_it_expired_where_the_store_can_tell(
    any_store: Store, clock: FakeClock
) -> None:
    recorder = Recorder()
    kind = store_kind(any_store)

    async def peek(session: Session, request: Request) -> Any:
        return {"n": session.get("n")}  # loads, writes nothing

    handlers = {"in": sign_in, "peek": peek, "touch": touch}
    application = app_with(any_store, handlers, events=recorder.events, max_age=100)
    async with client_for(application) as client:
        cookie = (await client.post("/in?as=ada")).cookies["session"]
        public_id = public_id_of(any_store, cookie)
        clock.advance(200)
        recorder.clear()
        assert (await client.get("/untouched", headers=sent(cookie))).status_code == 200
        assert recorder.seen == []  # nobody loaded it: nothing observed
        for _ in range(2):
            response = await client.post("/peek", headers=sent(cookie))
            assert response.json() == {"n": None}  # a fresh session, as before
            assert "set-cookie" not in response.headers  # a read-only request keeps it
        fired = ("expired", public_id, "ada", 1)
        loads = [(e.type, e.public_id, e.owner, e.count) for e in recorder.seen]
        # memory: once (its read drops the record); SQLite and PostgreSQL: every load
        # until clear_expired() removes it; the cookie store: every load of the signed
        # cookie (nothing server-side to drop); Redis deleted it itself, so missing and
        # expired look the same.
        times = {"memory": 1, "redis": 0}.get(kind, 2)
        assert loads == [fired] * times
        assert all(e.scope is not None and e.scope["path"] == "/peek" for e in recorder.seen)
        client.cookies.clear()
        recorder.clear()
        await client.post("/touch")
        await client.post("/peek", headers=sent("x" * 40 + ".forged"))
        assert recorder.kinds() == ["created"]  # a missing record is not an expired one


@pytest.mark.parametrize("encrypt", [False, True], ids=["signed", "encrypted"])
async def test_an_expired_cookie_fires_with_its_owner_and_a_forged_one_never(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, encrypt: bool
) -> None:
    from asgi_sessions.stores.cookie import CookieStore

    store = CookieStore(encrypt=encrypt, clock=clock)
    recorder = Recorder()
    handlers = {"in": sign_in, "touch": touch}
    async with client_for(app_with(store, handlers, max_age=100)) as client:
        cookie = (await client.post("/in?as=ada")).cookies["session"]
    clock.advance(200)
    # Another process (a fresh middleware, so the signature is checked, not remembered).
    application = app_with(store, handlers, events=recorder.events, max_age=100)
    body, issued, expires, signature = cookie.split(".")
    tampered = f"{body}.{issued}.{int(expires, 16) - 1:x}.{signature}"
    signer = Signer([SECRET], salt="asgi_sessions.cookie")
    unreadable = signer.sign(f"jAAAA.{issued}.{expires}")  # ours, but not a body we read
    async with client_for(application) as client:
        with caplog.at_level(logging.WARNING, logger="asgi_sessions"):
            await client.post("/touch", headers=sent(tampered))
            assert recorder.kinds() == ["created"]  # a forged cookie is not an expired one
            assert "bad signature" in caplog.text
            caplog.clear()
            recorder.clear()
            await client.post("/touch", headers=sent(cookie))
            await client.post("/touch", headers=sent(unreadable))
            assert "bad signature" not in caplog.text  # expired is not forged
    seen = [(e.type, e.public_id, e.owner) for e in recorder.seen]
    assert seen == [
        ("expired", None, "ada"),
        ("created", None, None),
        ("expired", None, None),  # expired all the same; the owner cannot be read
        ("created", None, None),
    ]


async def test_postgres_tells_an_expired_record_in_its_one_load_without_reading_its_data(
    postgres_url: str, clock: FakeClock
) -> None:
    from asgi_sessions.stores.postgres import PostgresStore

    async with PostgresStore(postgres_url, clock=clock) as store:
        for key, ttl in (("live", 3600), ("dead", -10)):
            change = session_write(clock(), set=encoded({"n": 1, "m": 2}), create=True, ttl=ttl)
            await store.save(key.ljust(43, "k"), change)
        load = store._queries["load"]
        async with (await store._get_pool()).acquire() as conn:
            for key, rows in (("live", 2), ("dead", 1), ("gone", 0)):
                sid = bytes.fromhex(hash_key(key.ljust(43, "k")))
                found = await conn.fetch(load, sid, clock())
                assert len(found) == rows
                if key == "dead":
                    assert tuple(found[0])[5:] == (None, None)  # no data of a dead session
                explain = "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + load
                plan = "\n".join(row[0] for row in await conn.fetch(explain, sid, clock()))
                # Both through the indexes; the data scan never runs for the dead one.
                assert plan.count("Index Cond") == 2, plan
                assert ("never executed" in plan) == (key != "live"), plan


async def test_nothing_fires_for_a_400_a_5xx_or_a_write_that_raised(store: Store) -> None:
    recorder = Recorder()

    async def crash(session: Session, request: Request) -> Any:
        session.owner = "mallory"
        return PlainTextResponse("boom", status_code=500)

    async def stale(session: Session, request: Request) -> Any:
        session.owner = "eve"
        # Another request logs the session out meanwhile: this save answers 400.
        await store.delete(session.session_key)  # type: ignore[arg-type]
        return {}

    handlers = {"in": sign_in, "crash": crash, "stale": stale, "touch": touch}
    application = app_with(store, handlers, events=recorder.events)
    async with client_for(application) as client:
        await client.post("/in")
        recorder.clear()
        assert (await client.post("/crash")).status_code == 500
        assert (await client.post("/stale")).status_code == 400
        assert recorder.seen == []
        client.cookies.clear()

        async def down(*args: Any) -> Any:
            raise SessionStoreError("store down")

        store.create = down  # type: ignore[method-assign]
        try:
            assert (await client.post("/touch")).status_code == 503
        finally:
            del store.create
        assert recorder.seen == []


async def test_a_failing_handler_is_logged_and_the_request_succeeds(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(fail=True)
    async with client_for(app(store, recorder)) as client:
        with caplog.at_level(logging.ERROR, logger="asgi_sessions"):
            response = await client.post("/touch")
    assert response.status_code == 200
    assert "session" in response.cookies
    assert recorder.kinds() == ["created"]  # on_event still ran after the failure
    assert "Session event handler" in caplog.text


async def test_strict_mode_lets_a_failing_handler_fail_the_request(store: Store) -> None:
    recorder = Recorder(strict=True, fail=True)
    async with client_for(app(store, recorder)) as client:
        with pytest.raises(RuntimeError, match="handler failed"):
            await client.post("/touch")


async def test_without_handlers_no_observer_and_no_event_is_built(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []
    monkeypatch.setattr(SessionEvent, "__init__", lambda *a: built.append(a))
    seen: list[Session] = []

    async def keep(session: Session, request: Request) -> Any:
        seen.append(session)
        session.owner = "ada"
        await session.cycle_key()
        await session.flush()
        return {}

    async with client_for(app_with(store, {"keep": keep})) as client:
        await client.post("/keep")
    assert seen[0]._observer is None
    assert store.events is None
    assert built == []


async def test_events_must_be_a_session_events_object(store: Store) -> None:
    from asgi_sessions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="SessionEvents"):
        SessionMiddleware(None, secret_key="x" * 32, store=store, events=print)  # type: ignore[arg-type]


async def test_the_cli_fires_the_apps_revoked_and_expired_handlers_with_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    async with store_from_url(url) as store:
        now = time.time()
        for key, ttl in (("ann-1".ljust(43, "k"), 3600), ("ann-2".ljust(43, "k"), -10)):
            change = session_write(now, set=encoded({"n": 1}), create=True, owner="ann", ttl=ttl)
            await store.save(key, change)
    (tmp_path / "cli_hooks_events.py").write_text(
        "from asgi_sessions import SessionEvents\n"
        "seen = []\n"
        "async def record(event):\n"
        "    seen.append((event.type, event.owner, event.count))\n"
        "events = SessionEvents(on_event=record)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "cli_hooks_events", raising=False)
    status = await asyncio.to_thread(
        main, ["clear-expired", url, "--events", "cli_hooks_events:events"]
    )
    assert (status, capsys.readouterr().out) == (0, "1\n")
    status = await asyncio.to_thread(
        main, ["revoke", url, "ann", "--events", "cli_hooks_events:events"]
    )
    assert (status, capsys.readouterr().out) == (0, "1\n")
    hooks = sys.modules["cli_hooks_events"]
    assert hooks.seen == [("expired", None, 1), ("revoked", "ann", 1)]
    status = await asyncio.to_thread(
        main, ["revoke", url, "ann", "--events", "cli_hooks_events:nope"]
    )
    assert status == 1
    assert "cannot be imported" in capsys.readouterr().err

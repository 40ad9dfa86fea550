"""A store that fails before the response starts: the middleware answers 503 itself.

With ``Retry-After`` (``retry_after=``, 5 s by default) and a short plain-text body,
logged once, the cookie never touched, and the session intact once the store is back.
Requests that never touch the session are unaffected, and a failure after the response
started ends it as before (the server closes the connection).

Redis is a real server, stopped and started again. SQLite refuses writes for real
(``PRAGMA query_only``); a load failure, and any failure of the memory store, comes from
a subclass whose hooks fail on demand: nothing real makes those fail at will.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse

from asgi_sessions import MemoryStore, RedisStore, Session, SessionStoreError, Store
from asgi_sessions.stores.sqlite import SQLiteStore
from tests.redis_server import RedisProcess
from tests.support import app_with, client_for, cookie_value, sent

UNAVAILABLE = "The session store is unavailable. Please try again shortly."


class Outage:
    """One store, and a way to make its loads or its saves fail and then recover."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.failing: set[str] = set()

    async def fail_loads(self) -> None:
        self.failing.add("read")

    async def fail_saves(self) -> None:
        self.failing.update(("write", "move", "remove"))

    async def end(self) -> None:
        self.failing.clear()

    def check(self, hook: str) -> None:
        if hook in self.failing:
            raise SessionStoreError(f"{type(self.store).__name__} failed on purpose ({hook})")


def failing_on_demand(outage: Outage) -> Outage:
    """Make the store an instance of a subclass whose hooks fail while ``outage`` says so."""
    store = outage.store
    base = type(store)

    class Faulty(base):  # type: ignore[valid-type, misc]
        async def read(self, store_id: str) -> Any:
            outage.check("read")
            return await super().read(store_id)

        async def write(self, store_id: str, change: Any) -> Any:
            outage.check("write")
            return await super().write(store_id, change)

        async def move(self, store_id: str, new_id: str, change: Any) -> Any:
            outage.check("move")
            return await super().move(store_id, new_id, change)

        async def remove(self, store_id: str) -> None:
            outage.check("remove")
            await super().remove(store_id)

    store.__class__ = Faulty
    return outage


class ReadOnlySQLite(Outage):
    """SQLite refusing writes for real; loads still fail through the subclass."""

    async def fail_saves(self) -> None:
        await self._query_only(1)

    async def end(self) -> None:
        await super().end()
        await self._query_only(0)

    async def _query_only(self, on: int) -> None:
        assert isinstance(self.store, SQLiteStore)
        db = await self.store._connection()
        await db.execute(f"PRAGMA query_only = {on}")


class StoppedRedis(Outage):
    """A real Redis server, stopped: loads and saves both fail."""

    def __init__(self, store: Store, server: RedisProcess) -> None:
        super().__init__(store)
        self.server = server

    async def fail_loads(self) -> None:
        await asyncio.to_thread(self.server.stop)

    fail_saves = fail_loads

    async def end(self) -> None:
        await asyncio.to_thread(self.server.start)


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def outage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Outage]:
    if request.param == "memory":
        store: Store = MemoryStore()
        yield failing_on_demand(Outage(store))
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "sessions.sqlite3")
        yield failing_on_demand(ReadOnlySQLite(store))
    else:
        server: RedisProcess = request.getfixturevalue("redis_process")
        store = RedisStore.from_url(server.url, socket_timeout=1, socket_connect_timeout=1)
        yield StoppedRedis(store, server)
    await store.aclose()


def store_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "asgi_sessions" and r.levelno >= logging.ERROR]


def assert_unavailable(response: Any, retry_after: str = "5", *, new_session: bool = False) -> None:
    assert response.status_code == 503
    assert response.headers["retry-after"] == retry_after
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.text == UNAVAILABLE
    if new_session:
        # A failed create may have applied: the 503 carries the key it tried.
        assert response.headers["set-cookie"].startswith("session=")
    else:
        assert "set-cookie" not in response.headers  # the user keeps their session


def handlers(outage: Outage) -> dict[str, Any]:
    async def put(session: Session, request: Request) -> Any:
        session.update(request.query_params)
        return {}

    async def read(session: Session, request: Request) -> Any:
        return dict(session)

    async def break_then_write(session: Session, request: Request) -> Any:
        # Loaded fine; the store fails before the save at http.response.start.
        await outage.fail_saves()
        session["n"] = "2"
        return {"the app": "answered"}

    return {"put": put, "read": read, "break-then-write": break_then_write}


async def test_a_load_failing_in_the_view_answers_503_with_retry_after(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_with(outage.store, handlers(outage))
    async with client_for(app) as client:
        cookie = cookie_value(await client.get("/put", params={"n": "1"}))
        client.cookies.clear()
        await outage.fail_loads()
        caplog.clear()

        assert_unavailable(await client.get("/read", headers=sent(cookie)))
        assert len(store_errors(caplog)) == 1  # logged once
        untouched = await client.get("/untouched", headers=sent(cookie))
        assert (untouched.status_code, untouched.json()) == (200, {"ok": True})
        assert "set-cookie" not in untouched.headers

        await outage.end()
        assert (await client.get("/read", headers=sent(cookie))).json() == {"n": "1"}


async def test_a_save_failing_at_response_start_answers_503_instead_of_the_apps_response(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_with(outage.store, handlers(outage))
    async with client_for(app) as client:
        cookie = cookie_value(await client.get("/put", params={"n": "1"}))
        client.cookies.clear()
        caplog.clear()

        assert_unavailable(await client.get("/break-then-write", headers=sent(cookie)))
        assert len(store_errors(caplog)) == 1
        untouched = await client.get("/untouched", headers=sent(cookie))
        assert untouched.status_code == 200

        await outage.end()
        assert (await client.get("/read", headers=sent(cookie))).json() == {"n": "1"}


async def test_an_autoloading_middleware_answers_503_before_the_app_runs(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    app = app_with(outage.store, handlers(outage), autoload=True)
    async with client_for(app) as client:
        cookie = cookie_value(await client.get("/put", params={"n": "1"}))
        client.cookies.clear()
        await outage.fail_loads()
        caplog.clear()
        assert_unavailable(await client.get("/untouched", headers=sent(cookie)))
        assert len(store_errors(caplog)) == 1
        # Without a cookie there is nothing to load: the app answers.
        assert (await client.get("/untouched")).status_code == 200
        await outage.end()


async def test_retry_after_is_configurable() -> None:
    store = MemoryStore()
    outage = failing_on_demand(Outage(store))
    async with client_for(app_with(store, handlers(outage), retry_after=30)) as client:
        await outage.fail_saves()
        response = await client.get("/put", params={"n": "1"})
        assert_unavailable(response, retry_after="30", new_session=True)


async def test_a_failure_after_the_response_started_ends_it_as_before(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    async def stream(session: Session, request: Request) -> Any:
        async def body() -> AsyncIterator[bytes]:
            yield b"first part\n"
            await outage.fail_saves()
            session["n"] = "2"
            await session.save()  # too late for a clean answer: the headers are out
            yield b"never sent\n"

        return StreamingResponse(body(), media_type="text/plain")

    app = app_with(outage.store, {**handlers(outage), "stream": stream})
    async with client_for(app) as client:
        cookie = cookie_value(await client.get("/put", params={"n": "1"}))
        client.cookies.clear()
        caplog.clear()
        with pytest.raises(SessionStoreError):
            await client.get("/stream", headers=sent(cookie))
        assert len(store_errors(caplog)) == 1
        await outage.end()
        assert (await client.get("/read", headers=sent(cookie))).json() == {"n": "1"}

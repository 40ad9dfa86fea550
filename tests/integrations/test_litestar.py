"""Litestar, first class: the README's quickstart against Litestar 2.25, its dependency,
and Litestar's own server-side sessions as the baseline (they rewrite the whole session,
so one of two concurrent changes is lost; ours keeps both)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, get
from litestar.middleware import DefineMiddleware
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.testing import TestClient

from asgi_sessions import ImproperlyConfigured, MemoryStore, SessionMiddleware, SQLiteStore
from asgi_sessions.litestar import provide_session
from tests.support import section_source

SessionOf = Callable[[Request[Any, Any, Any]], Awaitable[dict[str, Any]]]


def test_litestar_is_at_least_the_version_the_readme_pins() -> None:
    major, minor = (int(part) for part in version("litestar").split(".")[:2])
    assert (major, minor) >= (2, 25)


def test_the_readme_litestar_quickstart_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__main__"}
    # Its own `if __name__ == "__main__":` part drives it with Litestar's TestClient.
    code = compile(section_source("Litestar quickstart"), "README", "exec", dont_inherit=True)
    exec(code, namespace)  # noqa: S102 - running our own documentation is the point
    store = namespace["store"]
    assert isinstance(store, SQLiteStore)
    assert store._closed  # the test client ran the lifespan, so on_shutdown closed it


async def test_provide_session_without_the_middleware_says_what_to_add() -> None:
    request: Request[Any, Any, Any] = Request({"type": "http", "headers": []})  # type: ignore[typeddict-item]
    with pytest.raises(ImproperlyConfigured, match="add SessionMiddleware"):
        await provide_session(request)


def test_request_session_is_ours_with_autoload() -> None:
    @get("/")
    async def view(request: Request[Any, Any, Any]) -> dict[str, int]:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return dict(request.session)

    app = Litestar(
        [view],
        middleware=[
            DefineMiddleware(SessionMiddleware, secret_key="k", store=MemoryStore(), autoload=True)
        ],
    )
    with TestClient(app) as client:
        assert client.get("/").json() == {"visits": 1}
        assert client.get("/").json() == {"visits": 2}


async def _ours(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return await provide_session(request)


async def _litestars(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return request.session


def _racing_app(
    session_of: SessionOf, middleware: Any
) -> tuple[Litestar, asyncio.Event, asyncio.Event]:
    a_loaded, release_a = asyncio.Event(), asyncio.Event()

    @get("/start")
    async def start(request: Request[Any, Any, Any]) -> str:
        (await session_of(request))["start"] = 1
        return "started"

    @get("/a")
    async def a(request: Request[Any, Any, Any]) -> str:
        session = await session_of(request)
        a_loaded.set()
        await release_a.wait()  # /b loads, changes and saves meanwhile
        session["a"] = 1
        return "a"

    @get("/b")
    async def b(request: Request[Any, Any, Any]) -> str:
        (await session_of(request))["b"] = 1
        return "b"

    @get("/view")
    async def view(request: Request[Any, Any, Any]) -> list[str]:
        return sorted(await session_of(request))

    return Litestar([start, a, b, view], middleware=[middleware]), a_loaded, release_a


async def _race(app: Litestar, a_loaded: asyncio.Event, release_a: asyncio.Event) -> list[str]:
    # httpx in this event loop (Litestar's AsyncTestClient runs the app in another thread).
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        await client.get("/start")
        task_a = asyncio.create_task(client.get("/a"))
        await a_loaded.wait()
        assert (await client.get("/b")).text == "b"
        release_a.set()
        assert (await task_a).text == "a"
        keys: list[str] = (await client.get("/view")).json()
        return keys


async def test_two_concurrent_changes_to_different_keys_both_survive_with_ours() -> None:
    middleware = DefineMiddleware(SessionMiddleware, secret_key="k", store=MemoryStore())
    assert await _race(*_racing_app(_ours, middleware)) == ["a", "b", "start"]


async def test_litestars_own_server_side_sessions_lose_one_of_them() -> None:
    # The baseline: Litestar's session middleware writes the whole session it loaded.
    middleware = ServerSideSessionConfig().middleware
    assert await _race(*_racing_app(_litestars, middleware)) == ["a", "start"]

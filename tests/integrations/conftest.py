"""Fixtures for the third-party flows: the session middleware under test, browsers.

``session_middleware`` runs each flow once per session layer: Starlette's own
``SessionMiddleware`` (the baseline the libraries are written for) and ours, as a
drop-in with ``autoload=True``, on the memory, SQLite and Redis stores. A flow that passes
on all of them is what "drop-in" means for that library.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware

from asgi_sessions import MemoryStore, SessionMiddleware, Store
from tests.integrations.web import TLS, Browser
from tests.support import SECRET

SESSION_LAYERS = ["starlette", "memory", "sqlite", "redis"]


def _open_store(kind: str, request: pytest.FixtureRequest) -> Store:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        from asgi_sessions import SQLiteStore

        tmp_path: Path = request.getfixturevalue("tmp_path")
        return SQLiteStore(tmp_path / "sessions.sqlite3")
    if kind == "redis":
        from asgi_sessions import RedisStore

        return RedisStore.from_url(request.getfixturevalue("redis_url"))
    raise AssertionError(kind)


@pytest.fixture(params=SESSION_LAYERS, ids=lambda kind: f"session={kind}")
async def session_middleware(request: pytest.FixtureRequest) -> AsyncIterator[Middleware]:
    """The session middleware an app under test is given: Starlette's, or ours on a store."""
    if request.param == "starlette":
        yield Middleware(StarletteSessionMiddleware, secret_key=SECRET)
        return
    async with _open_store(request.param, request) as store:
        yield Middleware(SessionMiddleware, secret_key=SECRET, store=store, autoload=True)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """``browser(base_url)``: a new client with its own cookie jar, which follows no
    redirect (each step of a flow is seen); all are closed after the test."""
    opened: list[httpx.AsyncClient] = []

    def open_browser(base_url: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(
            base_url=base_url, follow_redirects=False, timeout=10, verify=TLS
        )
        opened.append(client)
        return client

    yield open_browser
    for client in opened:
        await client.aclose()

"""Fixtures shared by every test: the store matrix, a controllable clock, an HTTP client.

``store`` runs a test once per server-side store (memory, SQLite, Redis on one server,
on a Redis Cluster and behind Sentinel, PostgreSQL); ``any_store`` adds the cookie store
for tests that work at the HTTP level.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asgi_sessions import MemoryStore, Store
from tests.clock import FakeClock

pytest_plugins = ["tests.redis_server", "tests.redis_cluster", "tests.postgres_server"]

PACKAGE = Path(__file__).resolve().parent.parent / "asgi_sessions"


def _available(kind: str) -> bool:
    # A backend joins the matrix as soon as its module exists.
    module = kind.partition("-")[0]
    return kind == "memory" or (PACKAGE / "stores" / f"{module}.py").exists()


REDIS_STORES = ("redis", "redis-cluster", "redis-sentinel")
SERVER_STORES = [
    kind for kind in ("memory", "sqlite", *REDIS_STORES, "postgres") if _available(kind)
]
ANY_STORES = [*SERVER_STORES, *(["cookie"] if _available("cookie") else [])]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def _make_store(kind: str, request: pytest.FixtureRequest, clock: FakeClock) -> Store:
    if kind == "memory":
        return MemoryStore(clock=clock)
    if kind == "sqlite":
        from asgi_sessions.stores.sqlite import SQLiteStore

        tmp_path: Path = request.getfixturevalue("tmp_path")
        return SQLiteStore(tmp_path / "sessions.sqlite3", clock=clock)
    if kind in REDIS_STORES:
        from asgi_sessions.stores.redis import RedisStore

        fixture = {"redis": "redis_url", "redis-cluster": "redis_cluster_url"}
        url: str = request.getfixturevalue(fixture.get(kind, "redis_sentinel_url"))
        return RedisStore.from_url(url, clock=clock)
    if kind == "postgres":
        from asgi_sessions.stores.postgres import PostgresStore

        dsn: str = request.getfixturevalue("postgres_url")
        return PostgresStore(dsn, clock=clock)
    if kind == "cookie":
        from asgi_sessions.stores.cookie import CookieStore

        return CookieStore(clock=clock)
    raise AssertionError(kind)


@pytest.fixture(params=SERVER_STORES)
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Store]:
    """Each server-side store in turn, opened fresh and closed after the test."""
    async with await _make_store(request.param, request, clock) as opened:
        yield opened


@pytest.fixture(params=ANY_STORES)
async def any_store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Store]:
    """Every store, the cookie store included."""
    async with await _make_store(request.param, request, clock) as opened:
        yield opened


@pytest.fixture(params=[kind for kind in REDIS_STORES if _available(kind)])
async def redis_store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Store]:
    """RedisStore on each topology: one server, a Redis Cluster, behind Sentinel."""
    async with await _make_store(request.param, request, clock) as opened:
        yield opened

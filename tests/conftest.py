"""Fixtures shared by the groups: the store matrix, a controllable clock, the servers.

``store`` runs a test once per server-side store (memory, SQLite, Redis on one server,
on a Redis Cluster and behind Sentinel, PostgreSQL); ``any_store`` adds the cookie store
for tests that work at the HTTP level. The servers (Redis, a Redis Cluster, Sentinel,
PostgreSQL) start once per run, when a test first asks for one. What one group alone
needs is in that group's ``conftest.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asgi_sessions import MemoryStore, Store
from tests.clock import FakeClock

pytest_plugins = ["tests.redis_server", "tests.redis_cluster", "tests.postgres_server"]

REDIS_STORES = ("redis", "redis-cluster", "redis-sentinel")
# Every store, always: a backend missing here would drop its tests without a failure.
SERVER_STORES = ["memory", "sqlite", *REDIS_STORES, "postgres"]
ANY_STORES = [*SERVER_STORES, "cookie"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def make_store(kind: str, request: pytest.FixtureRequest, clock: FakeClock) -> Store:
    """A new store of this kind (a name of ``ANY_STORES``) on the test's servers."""
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
    async with await make_store(request.param, request, clock) as opened:
        yield opened


@pytest.fixture(params=ANY_STORES)
async def any_store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Store]:
    """Every store, the cookie store included."""
    async with await make_store(request.param, request, clock) as opened:
        yield opened

"""The floors: session-less apps doing only the raw store I/O a session costs.

``/read`` reads a value the size of the session's JSON (one GET, one SELECT by primary
key), ``/write`` reads it and writes a changed value of the same size back (GET + SET,
SELECT + upsert), ``/create`` writes it only (the first write's floor), ``/untouched``
does nothing. A write changes the value, as the session's write changes its counter:
SQLite commits an upsert of an unchanged row without writing a page, so a floor that
wrote the same value back did less than any session write can (issue 24). Each floor's
client is set up as the matching store's (the same pragmas, the same pool settings), so
a floor pays what the store pays for the I/O itself and nothing else: a fixed key, no
cookie parsing, no signing, no decoding.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

Closers = list[Callable[[], Awaitable[Any]]]
TTL = 14 * 24 * 3600


_writes = itertools.count(1)


def changed(value: str) -> str:
    """``value`` with its first 12 characters replaced by a fresh counter: the same size,
    never the same text (the floor stores opaque text, so it need not stay JSON)."""
    return f"{next(_writes):012d}" + value[12:]


def floor_app(
    read_one: Callable[[], Awaitable[Any]], write_one: Callable[[], Awaitable[Any]]
) -> Starlette:
    """A session-less app whose read/write views do the raw store I/O a session costs."""

    async def untouched(request: Request) -> Response:
        return PlainTextResponse("alice")

    async def read(request: Request) -> Response:
        value = await read_one()
        return PlainTextResponse("alice" if value else "?")

    async def write(request: Request) -> Response:
        value = await read_one()
        await write_one()
        return PlainTextResponse("alice" if value else "?")

    async def create(request: Request) -> Response:
        await write_one()
        return PlainTextResponse("alice")

    routes = [
        Route("/untouched", untouched),
        Route("/read", read),
        Route("/write", write),
        Route("/create", create),
    ]
    return Starlette(routes=routes)


async def raw_redis(url: str, value: str) -> tuple[Starlette, Closers]:
    """redis-py: ``GET`` / ``GET`` + ``SET`` / ``SET``."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    key = "bench:raw-redis:session"
    await client.set(key, value, ex=TTL)

    async def get() -> Any:
        return await client.get(key)

    async def put() -> Any:
        return await client.set(key, changed(value), ex=TTL)

    return floor_app(get, put), [client.aclose]


async def raw_sqlite(path: str, value: str) -> tuple[Starlette, Closers]:
    """aiosqlite on one open connection: ``SELECT`` by primary key / ``SELECT`` + ``UPSERT``."""
    import aiosqlite

    db = await aiosqlite.connect(path, isolation_level=None)
    # The pragmas SQLiteStore uses, so the floor pays what the store pays.
    await db.execute_fetchall("PRAGMA journal_mode = WAL")
    await db.execute_fetchall("PRAGMA synchronous = NORMAL")
    await db.execute_fetchall(
        "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, data TEXT NOT NULL)"
    )
    key = "k" * 64
    upsert = (
        "INSERT INTO sessions (id, data) VALUES (?, ?) "
        "ON CONFLICT (id) DO UPDATE SET data = excluded.data"
    )
    await db.execute_fetchall(upsert, (key, value))

    async def select() -> Any:
        rows = await db.execute_fetchall("SELECT data FROM sessions WHERE id = ?", (key,))
        return list(rows)

    async def save() -> Any:
        return await db.execute_fetchall(upsert, (key, changed(value)))

    return floor_app(select, save), [db.close]


async def raw_postgres(dsn: str, value: str) -> tuple[Starlette, Closers]:
    """asyncpg, a pool set up as PostgresStore's: one ``SELECT`` by primary key (live
    records only) / that ``SELECT`` + one upsert / the upsert: what a minimal store issues."""
    from .pg import store_like_pool

    pool = await store_like_pool(dsn)
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS bench_raw_sessions "
        "(id bytea PRIMARY KEY, data text NOT NULL, expires_at float8 NOT NULL)"
    )
    key = hashlib.sha256(b"raw-postgres").digest()
    upsert = (
        "INSERT INTO bench_raw_sessions VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
        "SET data = excluded.data, expires_at = excluded.expires_at"
    )
    await pool.execute(upsert, key, value, time.time() + TTL)

    async def select() -> Any:
        return await pool.fetchval(
            "SELECT data FROM bench_raw_sessions WHERE id = $1 AND expires_at > $2",
            key,
            time.time(),
        )

    async def save() -> Any:
        return await pool.execute(upsert, key, changed(value), time.time() + TTL)

    return floor_app(select, save), [pool.close]

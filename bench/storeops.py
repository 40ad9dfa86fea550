"""The only place the bench reaches below the public API: one store write, and fillers
that write a million records straight into a store's tables or keys (setup, untimed).

When the store interface or a storage layout changes, this file changes; the suites do
not. The suites check what a filler wrote through the public API (a load, a listing), so a
filler that no longer matches the layout fails the run instead of timing an empty store.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from asgi_sessions.stores.base import SessionWrite, hash_key

TTL = 3600.0
FILLER_OWNERS = 100_000  # filler sessions belong to this many other owners


def change(
    data: dict[str, str], *, create: bool, owner: str | None = None, replace: bool = False
) -> SessionWrite:
    """A save of ``data`` (encoded values) now: a new record if ``create``."""
    now = time.time()
    return SessionWrite(
        set=data,
        deleted=frozenset(),
        replace=replace,
        create=create,
        now=now,
        default_expires_at=now + TTL,
        expires_cap=None,
        created_at=now,
        owner=owner,
        owner_changed=owner is not None,
    )


def filler_key(i: int) -> str:
    return f"filler{i}"


def filler_owner(i: int) -> str:
    return f"o{i % FILLER_OWNERS}"


def fill_sqlite(path: Any, rows: int) -> None:
    """``rows`` sessions (``filler_key(i)``, owner ``filler_owner(i)``, ``{"user": "ann"}``)
    written with plain sqlite3 into a database whose schema the store has created."""
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    for start in range(0, rows, 50_000):
        batch = [(hash_key(filler_key(i)), i) for i in range(start, min(rows, start + 50_000))]
        conn.executemany(
            "INSERT INTO sessions (id, created_at, updated_at, expires_at, expiry, owner) "
            "VALUES (?, ?, ?, ?, NULL, ?)",
            ((sid, now, now, now + TTL, filler_owner(i)) for sid, i in batch),
        )
        conn.executemany(
            "INSERT INTO session_data VALUES (?, 'user', '\"ann\"')", ((sid,) for sid, _ in batch)
        )
    conn.execute("COMMIT")
    conn.close()


# Sessions of FILLER_OWNERS other owners, in batches so the server stays responsive.
_FILL_REDIS = """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  local sid = string.format('%064x', i)
  local owner = 'o' .. (i % tonumber(ARGV[4]))
  redis.call('HSET', 'asgi_sessions:' .. sid, 'm:e', ARGV[3], 'm:c', ARGV[5], 'm:u', ARGV[5],
             'm:o', owner, 'd:user', '"ann"')
  redis.call('ZADD', 'asgi_sessions:owner:' .. owner, ARGV[3], sid)
end
"""


async def fill_redis(client: Any, rows: int) -> None:
    """``rows`` sessions of owners ``filler_owner(i)`` in the database ``client`` uses."""
    fill = client.register_script(_FILL_REDIS)
    for start in range(0, rows, 50_000):
        end = min(start + 50_000, rows) - 1
        now = time.time()
        await fill(args=[start, end, now + TTL, FILLER_OWNERS, now])


@contextmanager
def cookie_compression(enabled: bool) -> Iterator[None]:
    """The cookie store with compression on (as shipped) or off (to measure what it buys)."""
    from asgi_sessions.stores import cookie

    saved = cookie._MIN_COMPRESSIBLE
    if not enabled:
        cookie._MIN_COMPRESSIBLE = 1 << 30
    try:
        yield
    finally:
        cookie._MIN_COMPRESSIBLE = saved


async def fill_postgres(dsn: str, table: str, rows: int, *, expires_at: float) -> None:
    """``rows`` sessions (``filler_key(i)``, keys user, theme and cart), expiring at
    ``expires_at``, written by SQL straight into the tables of ``PostgresStore(dsn,
    table=table)`` (created first through the store)."""
    import asyncpg

    from asgi_sessions.stores.postgres import PostgresStore

    async with PostgresStore(dsn, table=table) as store:
        await store.load("warm-up")  # creates the schema
    conn = await asyncpg.connect(dsn)
    try:
        now = time.time()
        await conn.execute(
            f"INSERT INTO {table} (id, created_at, updated_at, expires_at, purge_after) "  # noqa: S608
            "SELECT sha256(convert_to('filler' || n, 'UTF8')), $1::float8, $1, $2::float8, "
            "floor($2::float8 / 3600) * 3600 FROM generate_series(0, $3 - 1) AS n",
            now, expires_at, rows,
        )  # fmt: skip
        await conn.execute(
            f"INSERT INTO {table}_data (sid, key, value) "  # noqa: S608
            "SELECT pk, k, '\"' || md5(pk::text || k) || '\"' "
            f"FROM {table}, unnest(ARRAY['user', 'theme', 'cart']) AS k"
        )
        await conn.execute(f"VACUUM ANALYZE {table}, {table}_data")
    finally:
        await conn.close()


def time_purge_batches(store: Any) -> list[tuple[float, int, float]]:
    """Record each batch of ``store.clear_expired()`` (a PostgresStore): the seconds the
    server spent on it (the longest any of its row locks was held), its size, and the
    seconds this process saw it take. The list fills as the purge runs."""
    batches: list[tuple[float, int, float]] = []
    original = store._purge_batch

    async def timed_batch(pool: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        row = await original(pool, **kwargs)
        batches.append((row[3], kwargs["size"], time.perf_counter() - started))
        return row

    store._purge_batch = timed_batch
    return batches

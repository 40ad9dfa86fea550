"""Log out everywhere: list and revoke-all for an owner with 10 sessions, among 1,000 and
among 1,000,000 stored sessions, on SQLite and Redis (goal: <= 1.5x, an index, no scan).

    .venv/bin/python -m bench.owner_figures [--rows 1000000] [--rounds 25]

The filler sessions belong to 100,000 other owners, so the owner index itself is large.
Starts its own redis-server unless REDIS_URL is set (then the Redis part is skipped, since
it fills two databases).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio

from asgi_sessions import RedisStore, SQLiteStore, Store
from asgi_sessions.stores.base import SessionWrite, hash_key
from bench.redis_figures import _FILL
from bench.services import redis_server

OWNER = "me"
TTL = 3600.0


def login(now: float) -> SessionWrite:
    return SessionWrite(
        set={"user": '"me"'},
        deleted=frozenset(),
        replace=True,
        create=True,
        expires_at=now + TTL,
        created_at=now,
        updated_at=now,
        owner=OWNER,
    )


async def log_in_ten(store: Store, round_: int) -> None:
    now = time.time()
    for i in range(10):
        await store.save(f"owner-bench-{round_}-{i}".ljust(43, "x"), login(now))


def fill_sqlite(path: Path, rows: int) -> None:
    """Write ``rows`` sessions of 100,000 other owners with plain sqlite3 (setup, untimed)."""
    now = time.time()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    for start in range(0, rows, 50_000):
        batch = [(hash_key(f"filler{i}"), i) for i in range(start, min(rows, start + 50_000))]
        conn.executemany(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, NULL, ?)",
            ((sid, now, now, now + TTL, f"o{i % 100_000}") for sid, i in batch),
        )
        conn.executemany(
            "INSERT INTO session_data VALUES (?, 'user', '\"x\"')", ((sid,) for sid, _ in batch)
        )
    conn.execute("COMMIT")
    conn.close()


async def sqlite_stores(directory: Path, rows: int) -> dict[int, Store]:
    stores: dict[int, Store] = {}
    for count in (1_000, rows):
        path = directory / f"owners-{count}.sqlite3"
        store = SQLiteStore(path)
        await store.clear_expired()  # creates the schema
        await asyncio.to_thread(fill_sqlite, path, count)
        stores[count] = store
    return stores


async def redis_stores(url: str, rows: int) -> dict[int, Store]:
    base = url.rsplit("/", 1)[0]
    stores: dict[int, Store] = {}
    for db, count in ((14, 1_000), (15, rows)):
        client = redis.asyncio.Redis.from_url(f"{base}/{db}", decode_responses=True)
        await client.flushdb()
        fill = client.register_script(_FILL)
        for start in range(0, count, 50_000):
            await fill(args=[start, min(start + 50_000, count) - 1, time.time() + TTL])
        stores[count] = RedisStore.from_url(f"{base}/{db}")
        await client.aclose()
    return stores


Timed = Callable[[Store, int], Awaitable[float]]


async def time_list(store: Store, round_: int) -> float:
    started = time.perf_counter()
    sessions = await store.list_sessions(OWNER)
    elapsed = time.perf_counter() - started
    assert len(sessions) == 10, len(sessions)
    return elapsed


async def time_revoke_all(store: Store, round_: int) -> float:
    started = time.perf_counter()
    ended = await store.revoke_all(OWNER)
    elapsed = time.perf_counter() - started
    assert ended == 10, ended
    await log_in_ten(store, round_)  # the next round needs them back
    return elapsed


async def measure(label: str, stores: dict[int, Store], rounds: int) -> None:
    small, large = sorted(stores)
    for store in stores.values():
        await log_in_ten(store, -1)
    for name, timed in (("list_sessions", time_list), ("revoke_all", time_revoke_all)):
        samples: dict[int, list[float]] = {small: [], large: []}
        for round_ in range(rounds):
            for count in (small, large):  # interleaved, so drift cancels
                samples[count].append(await timed(stores[count], round_))
        a, b = (statistics.median(samples[c]) * 1e6 for c in (small, large))
        ratios = sorted(y / x for x, y in zip(samples[small], samples[large], strict=True))
        spread = f"[{ratios[len(ratios) // 10]:.2f}-{ratios[-1 - len(ratios) // 10]:.2f}]"
        verdict = "PASS" if b / a <= 1.5 else "MISS"
        print(
            f"  {label:7} {name:14} among {small:>9,}: {a:8.1f} us   among {large:>9,}: "
            f"{b:8.1f} us   ratio {b / a:.2f}x {spread} (goal <= 1.5x) {verdict}"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    print(f"owner with 10 sessions; {args.rounds} interleaved rounds; medians")
    with tempfile.TemporaryDirectory() as directory:
        stores = await sqlite_stores(Path(directory), args.rows)
        try:
            await measure("sqlite", stores, args.rounds)
        finally:
            for store in stores.values():
                await store.aclose()
    if os.environ.get("REDIS_URL"):
        print("  redis: skipped (it fills databases 14 and 15, so it runs on its own server)")
        return
    with redis_server() as url:
        stores = await redis_stores(url, args.rows)
        try:
            await measure("redis", stores, args.rounds)
        finally:
            for store in stores.values():
                await store.aclose()


if __name__ == "__main__":
    asyncio.run(main())

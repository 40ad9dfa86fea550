"""What ``python -m bench postgres`` measures of PostgresStore: against raw asyncpg on one
connection (and 100 KB against 1 KB), 64 concurrent writers, a load among many sessions,
and the purge beside live saves. Each returns data; the suite turns it into tables.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from .pg import store_like_pool
from .stats import time_ops
from .storeops import change, fill_postgres, filler_key, time_purge_batches

Op = Callable[[], Awaitable[Any]]
LOAD, SELECT = "PostgresStore.load (1 KB)", "raw SELECT by primary key (1 KB)"
SAVE, UPSERT = "PostgresStore.save of 1 key (1 KB)", "raw SELECT + upsert (1 KB)"
SAVE_100K = "PostgresStore.save of 1 key (100 KB)"


def session_data(size: int) -> dict[str, str]:
    """About ``size`` bytes over keys of ~100-byte JSON strings (random, so TOAST cannot
    shrink them)."""
    return {
        f"key{i:05d}": json.dumps(random.randbytes(48).hex()) for i in range(max(1, size // 110))
    }


async def against_raw(dsn: str, rounds: int, n: int) -> dict[str, tuple[float, float]]:
    """The store's load and save against the raw statements a minimal store would run, on
    one connection each (the raw pool set up as the store's)."""
    from asgi_sessions.stores.postgres import PostgresStore

    store = PostgresStore(dsn, table="bench_store", min_size=1, max_size=1)
    raw = await store_like_pool(dsn, max_size=1)
    try:
        small, large = session_data(1024), session_data(100 * 1024)
        await store.save("small" * 9, change(small, create=True))
        await store.save("large" * 9, change(large, create=True))
        blob, raw_id = json.dumps(small), random.randbytes(32)
        await raw.execute("CREATE TABLE raw (id bytea PRIMARY KEY, data text, expires_at float8)")
        await raw.execute("INSERT INTO raw VALUES ($1, $2, $3)", raw_id, blob, time.time() + 3600)
        one = {"key00000": json.dumps(random.randbytes(48).hex())}

        async def select() -> Any:
            return await raw.fetchval(
                "SELECT data FROM raw WHERE id = $1 AND expires_at > $2", raw_id, time.time()
            )

        async def select_upsert() -> Any:
            await select()
            return await raw.execute(
                "INSERT INTO raw VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
                "SET data = excluded.data, expires_at = excluded.expires_at",
                raw_id, blob, time.time() + 3600,
            )  # fmt: skip

        return await time_ops(
            {
                SELECT: select,
                LOAD: lambda: store.load("small" * 9),
                UPSERT: select_upsert,
                SAVE: lambda: store.save("small" * 9, change(one, create=False)),
                SAVE_100K: lambda: store.save("large" * 9, change(one, create=False)),
            },
            rounds,
            n,
        )
    finally:
        await store.aclose()
        await raw.close()


async def concurrency(dsn: str, saves: int, writers: int = 64) -> dict[str, dict[str, Any]]:
    """``writers`` tasks x ``saves`` saves, through a pool of 16, to one session and to one
    session each: saves/s, failures by type, and acknowledged writes not stored after."""
    from asgi_sessions.errors import SessionError
    from asgi_sessions.stores.postgres import PostgresStore

    out = {}
    async with PostgresStore(dsn, table="bench_concurrency", max_size=16) as store:
        for sessions in (1, writers):
            keys = [f"c{sessions}-{n:02d}" + "x" * 36 for n in range(sessions)]
            for key in keys:
                await store.save(key, change({"seed": "0"}, create=True))
            errors: list[str] = []
            acknowledged: dict[tuple[str, str], str] = {}

            async def writer(
                n: int,
                keys: list[str] = keys,
                errors: list[str] = errors,
                acknowledged: dict[tuple[str, str], str] = acknowledged,
            ) -> None:
                key = keys[n % len(keys)]
                for i in range(saves):
                    value = json.dumps(f"{n}:{i}")
                    try:
                        await store.save(key, change({f"w{n}": value, "all": value}, create=False))
                    except SessionError as exc:
                        errors.append(type(exc).__name__)
                        continue
                    acknowledged[(key, f"w{n}")] = value

            started = time.perf_counter()
            await asyncio.gather(*(writer(n) for n in range(writers)))
            elapsed = time.perf_counter() - started
            lost = 0
            for (key, name), value in acknowledged.items():
                stored = await store.load(key)
                lost += stored is None or stored.data.get(name) != value
            label = "to one session" if sessions == 1 else f"to {sessions} sessions"
            out[label] = {
                "saves_per_s": writers * saves / elapsed,
                "errors": dict(sorted(Counter(errors).items())),
                "lost": lost,
            }
    return out


async def scale(dsn: str, rows: int, rounds: int, n: int) -> dict[str, Any]:
    """A load of a random one of ``rows`` sessions against one of 1,000."""
    from asgi_sessions.stores.postgres import PostgresStore

    started = time.perf_counter()
    await fill_postgres(dsn, "bench_many", rows, expires_at=time.time() + 3600)
    await fill_postgres(dsn, "bench_few", 1000, expires_at=time.time() + 3600)
    fill_s = time.perf_counter() - started
    async with (
        PostgresStore(dsn, table="bench_many", max_size=1) as many,
        PostgresStore(dsn, table="bench_few", max_size=1) as few,
    ):

        async def load(store: PostgresStore, count: int) -> None:
            if await store.load(filler_key(random.randrange(count))) is None:
                raise RuntimeError("fill_postgres no longer matches PostgresStore's tables")

        loads = await time_ops(
            {f"among {rows:,}": lambda: load(many, rows), "among 1,000": lambda: load(few, 1000)},
            rounds,
            n,
        )
    return {"fill_s": fill_s, "loads": loads}


async def purge(dsn: str, rows: int, writers: int = 16) -> dict[str, Any]:
    """``clear_expired()`` of ``rows`` expired sessions while ``writers`` tasks save live
    ones: its batches (server-timed: how long each held its locks) and the saves' times."""
    from asgi_sessions.stores.postgres import PostgresStore

    await fill_postgres(dsn, "bench_purge", rows, expires_at=time.time() - 60)
    saves: list[float] = []
    async with PostgresStore(dsn, table="bench_purge", max_size=4) as store:
        live = [f"live-{n}" + "x" * 36 for n in range(writers)]
        for key in live:
            await store.save(key, change({"n": "0"}, create=True))
        batches = time_purge_batches(store)
        done = asyncio.Event()

        async def writer(key: str) -> None:
            i = 0
            while not done.is_set():
                i += 1
                started = time.perf_counter()
                await store.save(key, change({"n": str(i)}, create=False))
                saves.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(writer(key)) for key in live]
        started = time.perf_counter()
        removed = await store.clear_expired()
        total = time.perf_counter() - started
        done.set()
        await asyncio.gather(*tasks)
        target = store.purge_batch_seconds
    return {
        "removed": removed,
        "seconds": total,
        "target_batch_s": target,
        "batches": batches,  # (server seconds, size, seconds seen here)
        "saves_s": sorted(saves),
    }

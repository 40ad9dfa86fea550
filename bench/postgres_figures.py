"""PostgresStore's figures: against raw asyncpg, by session size, under concurrency, at
1,000,000 sessions, for the purge, and across processes.

    .venv/bin/python -m bench.postgres_figures            # everything (~10 min on 2 cores)
    .venv/bin/python -m bench.postgres_figures --quick    # 10,000 instead of 1,000,000
    .venv/bin/python -m bench.postgres_figures --durable  # fsync and synchronous_commit on
    .venv/bin/python -m bench.postgres_figures --only purge

Starts a private PostgreSQL cluster on a free loopback port (fsync off unless
``--durable``). Latencies: variants run in interleaved rounds, each figure the median of
the rounds' mean wall times (CPU time of this process beside it). The raw floors use an
asyncpg pool set up as the store's (statement cache on, no reset query on release), so
the ratio is what the store adds on top of the same driver.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from asgi_sessions.stores.base import SessionWrite
from asgi_sessions.stores.postgres import PostgresStore
from bench.postgres_processes import run as run_processes
from tests.postgres_server import PostgresProcess, find_bindir

ROUNDS = 11
OPS = 200
TTL = 14 * 24 * 3600

Op = Callable[[], Awaitable[Any]]


def session_data(size: int) -> dict[str, str]:
    """About ``size`` bytes over keys of ~100-byte JSON strings (random, so TOAST cannot
    shrink them)."""
    return {
        f"key{i:05d}": json.dumps(random.randbytes(48).hex()) for i in range(max(1, size // 110))
    }


def change(now: float, data: dict[str, str], *, create: bool = False) -> SessionWrite:
    return SessionWrite(
        set=data, deleted=frozenset(), replace=False, create=create, now=now,
        default_expires_at=now + TTL, expires_cap=None, created_at=now,
    )  # fmt: skip


async def compare(variants: dict[str, Op]) -> dict[str, tuple[float, float]]:
    names = list(variants)
    for name in names:
        for _ in range(20):
            await variants[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(ROUNDS):
        for name in names if round_ % 2 == 0 else reversed(names):
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(OPS):
                await variants[name]()
            wall[name].append((time.perf_counter() - started) / OPS)
            cpu[name].append((time.process_time() - cpu_started) / OPS)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in names}


def line(label: str, seconds: tuple[float, float]) -> str:
    return f"  {label:<46} {seconds[0] * 1e6:8.1f} µs wall {seconds[1] * 1e6:8.1f} µs CPU"


def ratio(label: str, a: tuple[float, float], b: tuple[float, float], goal: float) -> str:
    walls = a[0] / b[0]
    verdict = "ok" if walls <= goal else "OVER GOAL"
    return f"  {label:<46} {walls:5.2f}x wall {a[1] / b[1]:5.2f}x CPU  (goal <= {goal}x: {verdict})"


async def raw_pool(dsn: str) -> asyncpg.Pool:
    async def keep(connection: object) -> None:
        pass

    return await asyncpg.create_pool(dsn, min_size=1, max_size=1, reset=keep)


async def latency(dsn: str) -> None:
    print("\n## latency (one connection)")
    store = PostgresStore(dsn, min_size=1, max_size=1)
    raw = await raw_pool(dsn)
    try:
        now = time.time()
        small, large = session_data(1024), session_data(100 * 1024)
        await store.save("small" * 9, change(now, small, create=True))
        await store.save("large" * 9, change(now, large, create=True))
        blob = json.dumps(small)
        await raw.execute("CREATE TABLE raw (id bytea PRIMARY KEY, data text, expires_at float8)")
        raw_id = random.randbytes(32)
        await raw.execute("INSERT INTO raw VALUES ($1, $2, $3)", raw_id, blob, now + TTL)
        one = {"key00000": json.dumps(random.randbytes(48).hex())}
        print(f"  session: {len(small)} keys, {len(blob)} B of JSON; raw row: the same JSON")

        async def raw_select() -> None:
            await raw.fetchval(
                "SELECT data FROM raw WHERE id = $1 AND expires_at > $2", raw_id, time.time()
            )

        async def raw_select_upsert() -> None:
            await raw_select()
            await raw.execute(
                "INSERT INTO raw VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
                "SET data = excluded.data, expires_at = excluded.expires_at",
                raw_id, blob, time.time() + TTL,
            )  # fmt: skip

        medians = await compare(
            {
                "raw SELECT by PK": raw_select,
                "PostgresStore.load (1 KB)": lambda: store.load("small" * 9),
                "raw SELECT + upsert": raw_select_upsert,
                "PostgresStore.save 1 key (1 KB)": lambda: store.save(
                    "small" * 9, change(time.time(), one)
                ),
                "PostgresStore.save 1 key (100 KB)": lambda: store.save(
                    "large" * 9, change(time.time(), one)
                ),
            }
        )
        for name, seconds in medians.items():
            print(line(name, seconds))
        print(ratio("read: load / raw SELECT", medians["PostgresStore.load (1 KB)"],
                    medians["raw SELECT by PK"], 1.2))  # fmt: skip
        print(ratio("write: save / raw SELECT + upsert",
                    medians["PostgresStore.save 1 key (1 KB)"], medians["raw SELECT + upsert"],
                    1.3))  # fmt: skip
        print(ratio("size: save 100 KB / save 1 KB",
                    medians["PostgresStore.save 1 key (100 KB)"],
                    medians["PostgresStore.save 1 key (1 KB)"], 1.5))  # fmt: skip
    finally:
        await store.aclose()
        await raw.close()


async def concurrency(dsn: str) -> None:
    print("\n## 64 concurrent writers x 100 saves (pool of 16 connections)")
    async with PostgresStore(dsn, table="conc", max_size=16) as store:
        for sessions in (1, 64):
            keys = [f"c{sessions}-{n:02d}" + "x" * 36 for n in range(sessions)]
            for key in keys:
                await store.save(key, change(time.time(), {"seed": "0"}, create=True))
            errors: list[str] = []
            acknowledged: dict[tuple[str, str], str] = {}

            async def writer(
                n: int,
                keys: list[str] = keys,
                errors: list[str] = errors,
                acknowledged: dict[tuple[str, str], str] = acknowledged,
            ) -> None:
                key = keys[n % len(keys)]
                for i in range(100):
                    value = json.dumps(f"{n}:{i}")
                    try:
                        await store.save(key, change(time.time(), {f"w{n}": value, "all": value}))
                    except Exception as exc:  # every failure is counted
                        errors.append(type(exc).__name__)
                        continue
                    acknowledged[(key, f"w{n}")] = value

            started = time.perf_counter()
            await asyncio.gather(*(writer(n) for n in range(64)))
            elapsed = time.perf_counter() - started
            lost = 0
            for (key, name), value in acknowledged.items():
                stored = await store.load(key)
                lost += stored is None or stored.data.get(name) != value
            print(f"  to {sessions:>2} session(s): {6400 / elapsed:6.0f} saves/s, "
                  f"{len(errors)} errors {sorted(set(errors))}, {lost} lost writes")  # fmt: skip


async def bulk_load(dsn: str, table: str, count: int, *, expires_at: float) -> None:
    """``count`` sessions of 3 keys each, straight into the store's tables."""
    async with PostgresStore(dsn, table=table) as store:
        await store.load("warm" * 11)  # creates the schema
    conn = await asyncpg.connect(dsn)
    try:
        now = time.time()
        await conn.execute(
            f"INSERT INTO {table} (id, created_at, updated_at, expires_at, purge_after) "  # noqa: S608
            "SELECT sha256(convert_to('bulk-' || n, 'UTF8')), $1::float8, $1, $2::float8, "
            "floor($2::float8 / 3600) * 3600 "
            "FROM generate_series(1, $3) AS n",
            now, expires_at, count,
        )  # fmt: skip
        await conn.execute(
            f"INSERT INTO {table}_data (sid, key, value) "  # noqa: S608
            "SELECT pk, k, '\"' || md5(pk::text || k) || '\"' "
            f"FROM {table}, unnest(ARRAY['user', 'theme', 'cart']) AS k"
        )
        await conn.execute(f"VACUUM ANALYZE {table}, {table}_data")
    finally:
        await conn.close()


async def scale(dsn: str, big: int) -> None:
    print(f"\n## load with {big:,} stored sessions vs 1,000")
    started = time.perf_counter()
    await bulk_load(dsn, "big", big, expires_at=time.time() + TTL)
    await bulk_load(dsn, "few", 1000, expires_at=time.time() + TTL)
    print(f"  bulk insert of {big:,} sessions (3 keys each): {time.perf_counter() - started:.0f} s")
    async with (
        PostgresStore(dsn, table="big", max_size=1) as many,
        PostgresStore(dsn, table="few", max_size=1) as few,
    ):

        async def load_many() -> None:
            if await many.load(f"bulk-{random.randint(1, big)}") is None:
                raise AssertionError("a bulk session did not load")

        async def load_few() -> None:
            if await few.load(f"bulk-{random.randint(1, 1000)}") is None:
                raise AssertionError("a bulk session did not load")

        medians = await compare({f"load among {big:,}": load_many, "load among 1,000": load_few})
        for name, seconds in medians.items():
            print(line(name, seconds))
        a, b = medians[f"load among {big:,}"], medians["load among 1,000"]
        print(f"  ratio: {a[0] / b[0]:.2f}x wall (random keys, so the big table's pages are "
              "mostly not in shared_buffers)")  # fmt: skip


async def purge(dsn: str, count: int) -> None:
    print(f"\n## clear_expired of {count:,} expired sessions, with 16 writers on live ones")
    now = time.time()
    await bulk_load(dsn, "purge", count, expires_at=now - 60)
    batches: list[float] = []
    sizes: list[int] = []
    seen: list[float] = []
    saves: list[float] = []
    async with PostgresStore(dsn, table="purge", max_size=4) as store:
        live = [f"live-{n}" + "x" * 36 for n in range(16)]
        for key in live:
            await store.save(key, change(now, {"n": "0"}, create=True))
        original = store._purge_batch

        async def timed_batch(pool: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            row = await original(pool, **kwargs)
            batches.append(row[3])  # as the server measured the statement
            sizes.append(kwargs["size"])
            seen.append(time.perf_counter() - started)  # as this (busy) process saw it
            return row

        store._purge_batch = timed_batch  # type: ignore[method-assign]
        done = asyncio.Event()

        async def writer(key: str) -> None:
            i = 0
            while not done.is_set():
                i += 1
                started = time.perf_counter()
                await store.save(key, change(time.time(), {"n": str(i)}))
                saves.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)

        writers = [asyncio.create_task(writer(key)) for key in live]
        started = time.perf_counter()
        removed = await store.clear_expired()
        total = time.perf_counter() - started
        done.set()
        await asyncio.gather(*writers)
    slowest = sorted(zip(batches, sizes, strict=True))[-3:]
    batches.sort()
    seen.sort()
    saves.sort()
    target = store.purge_batch_seconds * 1e3
    print(f"  removed {removed:,} in {total:.1f} s ({removed / total:,.0f}/s), "
          f"{len(batches)} batches (their size adapts to ~{target:.0f} ms each)")  # fmt: skip
    p99 = batches[int(len(batches) * 0.99)]
    print(f"  one batch = one transaction (the longest any of its locks is held): median "
          f"{statistics.median(batches) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, "
          f"max {batches[-1] * 1e3:.1f} ms (server's clock); seen from the client: median "
          f"{statistics.median(seen) * 1e3:.1f} ms, max {seen[-1] * 1e3:.1f} ms")  # fmt: skip
    print(f"  batch sizes: median {statistics.median(sizes):.0f}, max {max(sizes)}; the three "
          "slowest: " + ", ".join(f"{t * 1e3:.0f} ms for {n}" for t, n in slowest))  # fmt: skip
    print(f"  {len(saves)} saves beside it: median {statistics.median(saves) * 1e3:.1f} ms, "
          f"max {saves[-1] * 1e3:.1f} ms")  # fmt: skip


async def main_async(dsn: str, big: int, only: str | None) -> None:
    if only in (None, "latency"):
        await latency(dsn)
    if only in (None, "concurrency"):
        await concurrency(dsn)
    if only in (None, "scale"):
        await scale(dsn, big)
    if only in (None, "purge"):
        await purge(dsn, big)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10,000 sessions, not 1,000,000")
    parser.add_argument("--durable", action="store_true", help="fsync and synchronous_commit on")
    parser.add_argument("--only", choices=["latency", "concurrency", "scale", "purge", "processes"])
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL not found (apt-get install postgresql)")
    server = PostgresProcess(bindir, durable=args.durable)
    try:
        server.start()
        print(f"PostgreSQL at {bindir}, fsync {'on' if args.durable else 'off'}, loopback TCP")
        asyncio.run(main_async(server.dsn, 10_000 if args.quick else 1_000_000, args.only))
        if args.only not in (None, "processes"):
            return
        print("\n## 4 uvicorn processes, 16 sessions x 8 concurrent writers, 10 s")
        result = run_processes(server.dsn, processes=4, clients=16, writers=8, seconds=10)
        print(f"  {result.writes} writes ({result.per_second:.0f}/s) from {len(result.pids)} "
              f"processes, errors {len(result.errors)}, lost writes {result.lost_writes}, "
              f"idle writers {result.idle_writers}")  # fmt: skip
    finally:
        server.remove()


if __name__ == "__main__":
    main()

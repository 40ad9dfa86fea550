"""The SQLite store's figures (issue 3), measured in one run with interleaved rounds.

    .venv/bin/python -m bench.sqlite_figures            # 1,000,000 rows for figure 4
    .venv/bin/python -m bench.sqlite_figures --rows 100000 --rounds 5

Each comparison alternates its two sides round by round and reports medians, so drift
(CPU frequency, page cache) hits both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite

from asgi_sessions.errors import SessionStoreError
from asgi_sessions.stores.base import SessionWrite, hash_key
from asgi_sessions.stores.sqlite import SQLiteStore

TTL = 3600.0


def write(data: dict[str, str], *, create: bool, now: float) -> SessionWrite:
    return SessionWrite(
        set=data,
        deleted=frozenset(),
        replace=False,
        create=create,
        expires_at=now + TTL,
        created_at=now,
        updated_at=now,
    )


def payload(total: int, keys: int) -> dict[str, str]:
    """``keys`` top-level keys whose encoded values add up to about ``total`` bytes."""
    size = max(1, total // keys - 2)
    return {f"key{i}": json.dumps("x" * size) for i in range(keys)}


async def per_op(fn: Callable[[int], Awaitable[object]], ops: int) -> float:
    start = time.perf_counter()
    for i in range(ops):
        await fn(i)
    return (time.perf_counter() - start) / ops


async def interleaved(
    sides: dict[str, Callable[[int], Awaitable[object]]], rounds: int, ops: int
) -> dict[str, float]:
    """Median seconds per op of each side, the sides alternating round by round."""
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            samples[name].append(await per_op(fn, ops))
    return {name: statistics.median(values) for name, values in samples.items()}


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} us"


async def figure_1_and_2(directory: Path, rounds: int, ops: int) -> None:
    path = directory / "small.sqlite3"
    now = time.time()
    async with SQLiteStore(path) as store:
        await store.save("s1k", write(payload(1_000, 10), create=True, now=now))
        await store.save("s100k", write(payload(100_000, 100), create=True, now=now))
        blob = json.dumps({k: json.loads(v) for k, v in payload(1_000, 10).items()})
        raw = await aiosqlite.connect(path, isolation_level=None)
        try:
            await raw.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, data TEXT) WITHOUT ROWID")
            await raw.execute("INSERT INTO raw VALUES (?, ?)", (hash_key("s1k"), blob))
            rid = hash_key("s1k")

            async def raw_select(i: int) -> object:
                return await raw.execute_fetchall("SELECT data FROM raw WHERE id = ?", (rid,))

            async def raw_select_upsert(i: int) -> object:
                rows = list(await raw.execute_fetchall("SELECT data FROM raw WHERE id = ?", (rid,)))
                data = json.loads(rows[0][0])
                data["key0"] = i
                return await raw.execute(
                    "INSERT INTO raw VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET data = "
                    "excluded.data",
                    (rid, json.dumps(data)),
                )

            def save_one(key: str) -> Callable[[int], Awaitable[object]]:
                async def save(i: int) -> object:
                    change = write({"counter": str(i)}, create=False, now=time.time())
                    return await store.save(key, change)

                return save

            read = await interleaved(
                {"store": lambda i: store.load("s1k"), "raw": raw_select}, rounds, ops
            )
            print("(1) read of an existing 1 KB session")
            print(f"    SQLiteStore.load           {us(read['store'])}")
            print(f"    raw aiosqlite SELECT by pk {us(read['raw'])}")
            print(f"    ratio {read['store'] / read['raw']:.2f}x (goal <= 1.2x)")

            saved = await interleaved(
                {"store": save_one("s1k"), "raw": raw_select_upsert, "big": save_one("s100k")},
                rounds,
                ops,
            )
            print("(2) save of one changed key")
            print(f"    SQLiteStore.save, 1 KB     {us(saved['store'])}")
            print(f"    raw SELECT + UPSERT        {us(saved['raw'])}")
            print(f"    ratio {saved['store'] / saved['raw']:.2f}x (goal <= 1.3x)")
            print(f"    SQLiteStore.save, 100 KB   {us(saved['big'])}")
            print(f"    100 KB vs 1 KB {saved['big'] / saved['store']:.2f}x (goal <= 1.5x)")
        finally:
            await raw.close()


async def figure_3(directory: Path, rounds: int) -> None:
    path = directory / "concurrent.sqlite3"
    now = time.time()
    async with SQLiteStore(path) as store:
        for i in range(64):
            await store.save(f"c{i}", write({"seed": "0"}, create=True, now=now))
        locked = errors = 0

        async def save(key: str, field: str) -> None:
            nonlocal locked, errors
            try:
                await store.save(key, write({field: "1"}, create=False, now=time.time()))
            except SessionStoreError as exc:
                errors += 1
                locked += "locked" in str(exc)

        print("(3) 64 concurrent saves")
        for label, keys in (
            ("to 64 sessions", [f"c{i}" for i in range(64)]),
            ("to one session", ["c0"] * 64),
        ):
            rates = []
            for _ in range(rounds):
                start = time.perf_counter()
                await asyncio.gather(*(save(key, f"f{n}") for n, key in enumerate(keys)))
                rates.append(64 / (time.perf_counter() - start))
            print(f"    {label:15} {statistics.median(rates):8.0f} saves/s")
        print(f"    lock errors {locked}, other errors {errors - locked} (goal 0)")


def fill(path: Path, rows: int, now: float) -> None:
    """Write ``rows`` sessions with plain sqlite3 (setup, not measured)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("BEGIN")
    chunk = 50_000
    for start in range(0, rows, chunk):
        ids = [hash_key(f"key{i}") for i in range(start, min(rows, start + chunk))]
        conn.executemany(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, NULL, NULL)",
            ((sid, now, now, now + TTL) for sid in ids),
        )
        conn.executemany(
            "INSERT INTO session_data VALUES (?, 'user', ?)", ((sid, '"ann"') for sid in ids)
        )
    conn.execute("COMMIT")
    conn.close()


async def figure_4(directory: Path, rows: int, rounds: int, ops: int) -> None:
    now = time.time()
    clock = [now]
    stores = {}
    for label, count in (("small", 1_000), ("large", rows)):
        path = directory / f"{label}.sqlite3"
        store = SQLiteStore(path, clock=lambda: clock[0])
        await store.load("create the schema")
        started = time.perf_counter()
        await asyncio.to_thread(fill, path, count, now)
        print(f"    (filled {count:,} sessions in {time.perf_counter() - started:.1f} s)")
        stores[label] = (store, count)
    try:
        sides = {
            label: (lambda i, s=store, n=count: s.load(f"key{(i * 7919) % n}"))
            for label, (store, count) in stores.items()
        }
        loads = await interleaved(sides, rounds, ops)
        print(f"(4) load among {rows:,} sessions vs among 1,000")
        print(f"    among 1,000      {us(loads['small'])}")
        print(f"    among {rows:<10,} {us(loads['large'])}")
        print(f"    ratio {loads['large'] / loads['small']:.2f}x (goal <= 1.5x)")

        clock[0] = now + 2 * TTL
        worst = 0.0
        done = asyncio.Event()

        async def watch() -> None:
            nonlocal worst
            while not done.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                worst = max(worst, time.perf_counter() - before - 0.001)

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        removed = await stores["large"][0].clear_expired()
        took = time.perf_counter() - started
        done.set()
        await watcher
        print(f"    clear_expired removed {removed:,} expired rows in {took:.1f} s")
        print(f"    longest event-loop stall {worst * 1000:.1f} ms (goal < 50 ms)")
    finally:
        for store, _ in stores.values():
            await store.aclose()


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as name:
        directory = Path(name)
        await figure_1_and_2(directory, args.rounds, args.ops)
        await figure_3(directory, args.rounds)
        await figure_4(directory, args.rows, args.rounds, args.ops)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_figures", description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000, help="sessions for figure 4")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per figure")
    parser.add_argument("--ops", type=int, default=300, help="operations per round")
    parser.add_argument("--dir", default=None, help="where the temporary files go")
    args = parser.parse_args()
    if not 1_000 <= args.rows <= 5_000_000:
        parser.error("--rows must be between 1,000 and 5,000,000")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

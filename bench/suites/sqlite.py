"""SQLiteStore against raw aiosqlite (a load against a SELECT by primary key, a save of one
key against SELECT + UPSERT, 100 KB against 1 KB), 64 concurrent saves (no "database is
locked"), and a load among 1,000,000 sessions against among 1,000 plus how long
``clear_expired`` stalls the event loop while it removes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

from ..harness import Context, Section
from ..stats import interleave, per_op
from ..storeops import TTL, change, fill_sqlite, filler_key

TITLE = "SQLiteStore"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, help="sessions for the scaling figure (1,000,000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per figure (9; quick 3)")
    parser.add_argument("--ops", type=int, help="operations per round (300; quick 50)")


def payload(total: int, keys: int) -> dict[str, str]:
    """``keys`` top-level keys whose encoded values add up to about ``total`` bytes."""
    return {f"key{i}": json.dumps("x" * max(1, total // keys - 2)) for i in range(keys)}


async def against_raw(directory: Path, rounds: int, ops: int) -> dict[str, float]:
    import aiosqlite

    from asgi_sessions.stores.sqlite import SQLiteStore

    path = directory / "small.sqlite3"
    async with SQLiteStore(path) as store:
        await store.save("s1k", change(payload(1_000, 10), create=True))
        await store.save("s100k", change(payload(100_000, 100), create=True))
        blob = json.dumps({k: json.loads(v) for k, v in payload(1_000, 10).items()})
        raw = await aiosqlite.connect(path, isolation_level=None)
        try:
            # The store's own settings (WAL is the file's already), so the floor pays what
            # the store pays: without NORMAL each autocommit would fsync.
            await raw.execute("PRAGMA synchronous = NORMAL")
            await raw.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, data TEXT) WITHOUT ROWID")
            await raw.execute("INSERT INTO raw VALUES ('k', ?)", (blob,))

            async def select() -> object:
                return await raw.execute_fetchall("SELECT data FROM raw WHERE id = 'k'")

            async def select_upsert() -> object:
                data = json.loads(next(iter(await select()))[0])  # type: ignore[call-overload]
                data["key0"] = time.time()
                return await raw.execute(
                    "INSERT INTO raw VALUES ('k', ?) ON CONFLICT (id) DO UPDATE SET data = "
                    "excluded.data",
                    (json.dumps(data),),
                )

            sides = {
                "SQLiteStore.load, 1 KB": per_op(lambda: store.load("s1k"), ops),
                "raw SELECT by pk": per_op(select, ops),
                "SQLiteStore.save of 1 key, 1 KB": per_op(
                    lambda: store.save("s1k", change({"counter": "1"}, create=False)), ops
                ),
                "raw SELECT + UPSERT": per_op(select_upsert, ops),
                "SQLiteStore.save of 1 key, 100 KB": per_op(
                    lambda: store.save("s100k", change({"counter": "1"}, create=False)), ops
                ),
            }
            samples = await interleave(sides, rounds)
            return {name: statistics.median(values) for name, values in samples.items()}
        finally:
            await raw.close()


async def concurrent(directory: Path, rounds: int) -> tuple[dict[str, float], int]:
    """Saves/s of 64 concurrent saves (to 64 sessions, to one), and how many failed."""
    from asgi_sessions.errors import SessionStoreError
    from asgi_sessions.stores.sqlite import SQLiteStore

    async with SQLiteStore(directory / "concurrent.sqlite3") as store:
        for i in range(64):
            await store.save(f"c{i}", change({"seed": "0"}, create=True))
        errors = 0

        async def save(key: str, field: str) -> None:
            nonlocal errors
            try:
                await store.save(key, change({field: "1"}, create=False))
            except SessionStoreError:
                errors += 1

        rates = {}
        for label, keys in (
            ("to 64 sessions", [f"c{i}" for i in range(64)]),
            ("to one session", ["c0"] * 64),
        ):
            samples = []
            for _ in range(rounds):
                started = time.perf_counter()
                await asyncio.gather(*(save(key, f"f{n}") for n, key in enumerate(keys)))
                samples.append(64 / (time.perf_counter() - started))
            rates[label] = statistics.median(samples)
        return rates, errors


async def scaling(directory: Path, rows: int, rounds: int, ops: int) -> dict[str, float]:
    from asgi_sessions.stores.sqlite import SQLiteStore

    clock = [time.time()]
    stores = {}
    try:
        for count in (1_000, rows):
            stores[count] = store = SQLiteStore(
                directory / f"{count}.sqlite3", clock=lambda: clock[0]
            )
            await store.clear_expired()  # creates the schema
            await asyncio.to_thread(fill_sqlite, directory / f"{count}.sqlite3", count)
            if await store.load(filler_key(count - 1)) is None:
                raise RuntimeError("fill_sqlite no longer matches SQLiteStore's tables")
        index = [0]

        def load(store: SQLiteStore, count: int) -> object:
            index[0] += 1
            return store.load(filler_key((index[0] * 7919) % count))

        sides = {str(c): per_op(lambda s=s, c=c: load(s, c), ops) for c, s in stores.items()}  # type: ignore[misc]
        loads = {k: statistics.median(v) for k, v in (await interleave(sides, rounds)).items()}

        clock[0] += 2 * TTL  # every filler expired: time the purge and watch the loop
        worst, done = 0.0, asyncio.Event()

        async def watch() -> None:
            nonlocal worst
            while not done.is_set():
                before = time.perf_counter()
                await asyncio.sleep(0.001)
                worst = max(worst, time.perf_counter() - before - 0.001)

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        removed = await stores[rows].clear_expired()
        took = time.perf_counter() - started
        done.set()
        await watcher
        return {
            "small": loads["1000"],
            "large": loads[str(rows)],
            "removed": removed,
            "purge_s": took,
            "stall_s": worst,
        }
    finally:
        for store in stores.values():
            await store.aclose()


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rows = args.rows or (20_000 if ctx.quick else 1_000_000)
    rounds = args.rounds or (3 if ctx.quick else 9)
    ops = args.ops or (50 if ctx.quick else 300)
    directory = ctx.tmpdir
    m = asyncio.run(against_raw(directory, rounds, ops))
    rates, errors = asyncio.run(concurrent(directory, rounds))
    s = asyncio.run(scaling(directory, rows, rounds, ops))

    def verdict(a: str, b: str, goal: float) -> str:
        value = m[a] / m[b]
        return f"{value:.2f}x (goal ≤ {goal}x: {'PASS' if value <= goal else '**MISS**'})"

    load, save, big = (
        f"SQLiteStore.{op}" for op in ("load, 1 KB", "save of 1 key, 1 KB", "save of 1 key, 100 KB")
    )
    m["SQLiteStore.load among 1,000"] = s["small"]
    m[f"SQLiteStore.load among {rows:,}"] = s["large"]
    lines = [
        f"Medians of {rounds} interleaved rounds x {ops} operations.",
        "",
        "| operation | us |",
        "|---|---:|",
        *(f"| {name} | {sec * 1e6:.1f} |" for name, sec in m.items()),
        "",
        "| figure | value |",
        "|---|---|",
        f"| load / SELECT | {verdict(load, 'raw SELECT by pk', 1.2)} |",
        f"| save / (SELECT + UPSERT) | {verdict(save, 'raw SELECT + UPSERT', 1.3)} |",
        f"| save, 100 KB / 1 KB | {verdict(big, save, 1.5)} |",
        *(
            f"| 64 concurrent saves {label} | {rate:,.0f} saves/s |"
            for label, rate in rates.items()
        ),
        f'| failed concurrent saves ("database is locked" or other) | {errors} (goal 0) |',
        f"| load among {rows:,} / among 1,000 | "
        f"{verdict(f'SQLiteStore.load among {rows:,}', 'SQLiteStore.load among 1,000', 1.5)} |",
        f"| clear_expired of {s['removed']:,} rows | {s['purge_s']:.1f} s; longest event-loop "
        f"stall {s['stall_s'] * 1000:.1f} ms (goal < 50 ms) |",
    ]
    data = {
        "rows": rows,
        "rounds": rounds,
        "ops": ops,
        "seconds": m,
        "saves_per_s": rates,
        "errors": errors,
        "scaling": s,
    }
    return Section(TITLE, lines, data)

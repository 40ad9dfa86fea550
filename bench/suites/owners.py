"""Log out everywhere: ``list_sessions`` and ``revoke_all`` for an owner with 10 sessions,
among 1,000 and among 1,000,000 stored sessions of 100,000 other owners, on SQLite and
Redis (goal: at most 1.5x, an index, no scan).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from ..harness import Context, Section
from ..services import REDIS, Unavailable
from ..stats import interleave, spread
from ..storeops import FILLER_OWNERS, change, fill_redis, fill_sqlite, filler_owner

TITLE = "Owner index: list and revoke an owner's 10 sessions"
OWNER = "me"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, help="stored sessions (1,000,000; quick 20,000)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (25; quick 3)")


async def log_in_ten(store: Any, tag: str) -> None:
    for i in range(10):
        await store.save(
            f"owner-bench-{tag}-{i}".ljust(43, "x"),
            change({"user": '"me"'}, create=True, owner=OWNER, replace=True),
        )


async def sqlite_stores(ctx: Context, rows: int) -> dict[int, Any]:
    from asgi_sessions import SQLiteStore

    stores = {}
    for count in (1_000, rows):
        path = ctx.tmpdir / f"owners-{count}.sqlite3"
        stores[count] = store = SQLiteStore(path)
        await store.clear_expired()  # creates the schema
        await asyncio.to_thread(fill_sqlite, path, count)
    return stores


async def redis_stores(url: str, rows: int) -> dict[int, Any]:
    import redis.asyncio

    from asgi_sessions import RedisStore

    base, stores = url.rsplit("/", 1)[0], {}
    for db, count in ((14, 1_000), (15, rows)):
        client = redis.asyncio.Redis.from_url(f"{base}/{db}", decode_responses=True)
        await client.flushdb()
        await fill_redis(client, count)
        await client.aclose()
        stores[count] = RedisStore.from_url(f"{base}/{db}")
    return stores


async def measure(stores: dict[int, Any], rounds: int) -> dict[str, dict[int, list[float]]]:
    small, large = sorted(stores)
    for count, store in stores.items():
        expected = len(range(0, count, FILLER_OWNERS))  # filler_owner(0)'s share
        if len(await store.list_sessions(filler_owner(0))) != expected:
            raise RuntimeError(f"the filler no longer matches {type(store).__name__}'s layout")
        await log_in_ten(store, "start")
    rounds_done = [0]

    def listing(store: Any) -> Any:
        async def one() -> float:
            started = time.perf_counter()
            listed = await store.list_sessions(OWNER)
            elapsed = time.perf_counter() - started
            assert len(listed) == 10, len(listed)
            return elapsed

        return one

    def revoking(store: Any) -> Any:
        async def one() -> float:
            started = time.perf_counter()
            ended = await store.revoke_all(OWNER)
            elapsed = time.perf_counter() - started
            assert ended == 10, ended
            rounds_done[0] += 1
            await log_in_ten(store, str(rounds_done[0]))  # the next round needs them back
            return elapsed

        return one

    out = {}
    for name, timer in (("list_sessions", listing), ("revoke_all", revoking)):
        samples = await interleave({str(c): timer(s) for c, s in stores.items()}, rounds)
        out[name] = {small: samples[str(small)], large: samples[str(large)]}
    return out


def rows_for(label: str, figures: dict[str, dict[int, list[float]]]) -> list[str]:
    lines = []
    for name, by_count in figures.items():
        (_, a), (_, b) = sorted(by_count.items())
        ratio = spread([y / x for x, y in zip(a, b, strict=True)])
        verdict = "PASS" if ratio[0] <= 1.5 else "**MISS**"
        lines.append(
            f"| {label} | {name} | {spread(a)[0] * 1e6:.1f} | {spread(b)[0] * 1e6:.1f} | "
            f"{ratio[0]:.2f}x [{ratio[1]:.2f}-{ratio[2]:.2f}] | {verdict} |"
        )
    return lines


async def _run_store(stores: dict[int, Any], rounds: int) -> dict[str, dict[int, list[float]]]:
    try:
        return await measure(stores, rounds)
    finally:
        for store in stores.values():
            await store.aclose()


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rows = args.rows or (20_000 if ctx.quick else 1_000_000)
    rounds = args.rounds or (3 if ctx.quick else 25)
    lines = [
        f"An owner with 10 sessions; {rounds} interleaved rounds; medians [p10-p90].",
        "",
        f"| store | call | among 1,000 us | among {rows:,} us | ratio | goal ≤ 1.5x |",
        "|---|---|---:|---:|---:|---|",
    ]
    data: dict[str, Any] = {"rows": rows, "rounds": rounds}

    async def on_sqlite() -> dict[str, dict[int, list[float]]]:
        return await _run_store(await sqlite_stores(ctx, rows), rounds)

    data["sqlite"] = asyncio.run(on_sqlite())
    lines += rows_for("sqlite", data["sqlite"])
    try:
        if ctx.services.external(REDIS):
            raise Unavailable("it fills databases 14 and 15, so it runs on its own server only")
        url = ctx.services.url(REDIS)
    except Unavailable as exc:
        lines += ["", f"Redis skipped: {exc}."]
        return Section(TITLE, lines, data)

    async def on_redis() -> dict[str, dict[int, list[float]]]:
        return await _run_store(await redis_stores(url, rows), rounds)

    data["redis"] = asyncio.run(on_redis())
    lines += rows_for("redis", data["redis"])
    return Section(TITLE, lines, data)

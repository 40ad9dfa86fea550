"""What ``python -m bench postgres-layout`` measures of the two layouts in
:mod:`bench.pg_layouts`; each returns data, the suite turns it into tables.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from .pg_layouts import LAYOUTS, Layout, Rows, new_id, session, value
from .stats import time_ops


async def latency(dsn: str, cache: int, rounds: int, ops: int) -> dict[str, tuple[float, float]]:
    """Each layout's load, save and rotation on one connection, and the raw floors."""
    conn = await asyncpg.connect(dsn, statement_cache_size=cache)
    now = time.time()
    variants: dict[str, Callable[[], Awaitable[Any]]] = {}
    raw_id, small, one = new_id(), session(1024), {"key00000": value(100)}
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS raw (id bytea PRIMARY KEY, data text, expires_at float8)"
    )
    await conn.execute("INSERT INTO raw VALUES ($1, $2, $3)", raw_id, json.dumps(small), now + 1e5)

    async def raw_read() -> None:
        await conn.fetchrow("SELECT data FROM raw WHERE id = $1 AND expires_at > $2", raw_id, now)

    async def raw_write() -> None:
        await raw_read()
        await conn.execute(
            "INSERT INTO raw VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
            "SET data = excluded.data, expires_at = excluded.expires_at",
            raw_id, json.dumps(small), now + 1e5,
        )  # fmt: skip

    variants["raw SELECT by PK (1 KB)"] = raw_read
    variants["raw SELECT + upsert (1 KB)"] = raw_write
    for layout_type in LAYOUTS:
        lay = layout_type(conn)
        for label, size in (("1 KB", 1024), ("100 KB", 100 * 1024)):
            sid = new_id()
            await lay.create(sid, session(size), now)
            variants[f"{lay.name}: load {label}"] = lambda lay=lay, s=sid: lay.load(s, now)
            if isinstance(lay, Rows):
                variants[f"rows: load {label} as 2 arrays"] = lambda lay=lay, s=sid: (
                    lay.load_arrays(s, now)
                )
            variants[f"{lay.name}: save 1 key of {label}"] = lambda lay=lay, s=sid: lay.save(
                s, one, [], time.time()
            )
        sid = new_id()  # a single 100 KB value next to small keys: change one small key
        await lay.create(sid, {**session(1024), "blob": value(100 * 1024)}, now)
        variants[f"{lay.name}: save 1 key of 1 KB + 100 KB blob"] = lambda lay=lay, s=sid: lay.save(
            s, one, [], time.time()
        )
        rotating = [new_id()]
        await lay.create(rotating[0], session(1024), now)

        async def rotate(lay: Layout = lay, current: list[bytes] = rotating) -> None:
            fresh = new_id()
            if not await lay.rotate(current[0], fresh, time.time()):
                raise AssertionError("rotation lost the session")
            current[0] = fresh

        variants[f"{lay.name}: rotate 1 KB"] = rotate
    try:
        return await time_ops(variants, rounds, ops)
    finally:
        await conn.close()


async def wal(dsn: str, saves: int) -> dict[str, float]:
    """WAL bytes written by one one-key save, by layout and session size."""
    conn = await asyncpg.connect(dsn)
    out = {}
    try:
        for layout_type in LAYOUTS:
            lay = layout_type(conn)
            for label, data in (
                ("1 KB", session(1024)),
                ("100 KB", session(100 * 1024)),
                ("1 KB + 100 KB blob", {**session(1024), "blob": value(100 * 1024)}),
            ):
                sid = new_id()
                await lay.create(sid, data, time.time())
                start = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
                for _ in range(saves):
                    await lay.save(sid, {"key00000": value(100)}, [], time.time())
                end = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
                diff = await conn.fetchval("SELECT pg_wal_lsn_diff($1, $2)", end, start)
                out[f"{lay.name}, {label}"] = float(diff) / saves
    finally:
        await conn.close()
    return out


async def hot(dsn: str, sessions: int) -> dict[str, dict[str, Any]]:
    """HOT updates and table sizes after 5 one-key saves per session, by purge index."""
    conn = await asyncpg.connect(dsn)
    stats = (
        "SELECT n_tup_upd, n_tup_hot_upd, pg_total_relation_size(relid) FROM pg_stat_user_tables"
        " WHERE relname = $1 AND schemaname = current_schema()"
    )

    async def on_own_connection(
        work: Callable[[Layout], Awaitable[None]], lt: type[Layout]
    ) -> None:
        # A backend flushes its table statistics when it exits (while it lives, at most
        # once a second, or after 10 s idle); before PostgreSQL 15 the collector takes
        # up to 500 ms more. So the work gets a connection that is closed after it.
        worker = await asyncpg.connect(dsn)
        try:
            await work(lt(worker))
        finally:
            await worker.close()
        await asyncio.sleep(0.6)

    out: dict[str, dict[str, Any]] = {}
    try:
        for variant, column in (("hour bucket", "purge_after"), ("expires_at", "expires_at")):
            await conn.execute("DROP INDEX IF EXISTS r_sessions_purge, j_sessions_purge")
            await conn.execute(f"CREATE INDEX r_sessions_purge ON r_sessions ({column})")
            await conn.execute(f"CREATE INDEX j_sessions_purge ON j_sessions ({column})")
            for layout_type in LAYOUTS:
                ids = [new_id() for _ in range(sessions)]

                async def create(lay: Layout, ids: list[bytes] = ids) -> None:
                    for sid in ids:
                        await lay.create(sid, session(1024), time.time())

                async def save(lay: Layout, ids: list[bytes] = ids) -> None:
                    for i in range(5 * len(ids)):
                        await lay.save(ids[i % len(ids)], {"key00001": value(100)}, [], time.time())

                await on_own_connection(create, layout_type)
                before = {t: await conn.fetchrow(stats, t) for t in layout_type.tables}
                await on_own_connection(save, layout_type)
                for table in layout_type.tables:
                    row = await conn.fetchrow(stats, table)
                    out.setdefault(f"index on {variant}, {layout_type.name}", {})[table] = {
                        "updates": row[0] - before[table][0],
                        "hot": row[1] - before[table][1],
                        "kib": row[2] // 1024,
                    }
    finally:
        await conn.close()
    return out


async def concurrency(dsn: str, saves: int, writers: int = 64) -> dict[str, dict[str, Any]]:
    """``writers`` tasks x ``saves`` saves through a pool of 16 (no statement cache), to one
    session and to one each; every writer sets its own key and one they all share."""
    pool = await asyncpg.create_pool(dsn, min_size=16, max_size=16, statement_cache_size=0)
    out = {}
    try:
        for layout_type in LAYOUTS:
            for sessions in (1, writers):
                ids = [new_id() for _ in range(sessions)]
                async with pool.acquire() as conn:
                    for sid in ids:
                        await layout_type(conn).create(sid, {"seed": '"x"'}, time.time())
                errors: list[str] = []
                last: dict[tuple[bytes, str], str] = {}

                async def writer(
                    n: int,
                    ids: list[bytes] = ids,
                    lt: type[Layout] = layout_type,
                    errors: list[str] = errors,
                    last: dict[tuple[bytes, str], str] = last,
                ) -> None:
                    sid = ids[n % len(ids)]
                    for i in range(saves):
                        v = json.dumps(f"{n}:{i}")
                        try:
                            async with pool.acquire() as conn:
                                saved = await lt(conn).save(
                                    sid, {f"w{n}": v, "shared": v}, [], time.time()
                                )
                        except asyncpg.PostgresError as exc:
                            errors.append(type(exc).__name__)
                            continue
                        if saved is not True:
                            errors.append("save lost the session")
                            continue
                        last[(sid, f"w{n}")] = v

                started = time.perf_counter()
                await asyncio.gather(*(writer(n) for n in range(writers)))
                elapsed = time.perf_counter() - started
                lost = 0
                async with pool.acquire() as conn:
                    for (sid, key), v in last.items():
                        loaded = await layout_type(conn).load(sid, time.time())
                        lost += loaded is None or loaded.get(key) != v
                where = "one session" if sessions == 1 else f"{sessions} sessions"
                out[f"{layout_type.name}, to {where}"] = {
                    "saves_per_s": writers * saves / elapsed,
                    "errors": dict(sorted(Counter(errors).items())),
                    "lost": lost,
                }
    finally:
        await pool.close()
    return out


async def semantics(dsn: str, trials: int) -> dict[str, dict[str, Any]]:
    """Under races: a delete stays deleted, emptiness is decided after the merge, and a
    key removed and re-added in one save (``clear()`` then a set) is simply written."""
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8, statement_cache_size=0)
    out = {}
    try:
        for layout_type in LAYOUTS:
            resurrected = emptied_wrongly = pop_won = 0
            for _ in range(trials):
                sid = new_id()
                async with pool.acquire() as conn:
                    await layout_type(conn).create(sid, {"a": "1"}, time.time())

                async def save(
                    set_: dict[str, str],
                    deleted: list[str],
                    sid: bytes = sid,
                    lt: type[Layout] = layout_type,
                ) -> bool | None:
                    async with pool.acquire() as conn:
                        return await lt(conn).save(sid, set_, deleted, time.time())

                async def delete(sid: bytes = sid, lt: type[Layout] = layout_type) -> None:
                    async with pool.acquire() as conn:
                        await conn.execute(f"DELETE FROM {lt.tables[0]} WHERE id = $1", sid)  # noqa: S608

                # A logout racing saves: afterwards the session must stay gone.
                await asyncio.gather(*(save({f"k{i}": "2"}, []) for i in range(8)), delete())
                async with pool.acquire() as conn:
                    resurrected += await layout_type(conn).load(sid, time.time()) is not None
                # A pop of the last key racing an add: either the add merged first (the
                # session lives on with b), or the pop emptied and deleted it first and
                # the add found it gone (it answers 400). Anything else is wrong.
                sid2 = new_id()
                async with pool.acquire() as conn:
                    await layout_type(conn).create(sid2, {"a": "1"}, time.time())
                _, added = await asyncio.gather(
                    save({}, ["a"], sid=sid2), save({"b": "2"}, [], sid=sid2)
                )
                async with pool.acquire() as conn:
                    loaded = await layout_type(conn).load(sid2, time.time())
                emptied_wrongly += (loaded, added) not in (({"b": "2"}, True), (None, None))
                pop_won += added is None
            async with pool.acquire() as conn:
                sid3, lay = new_id(), layout_type(conn)
                await lay.create(sid3, {"a": "1", "b": "1"}, time.time())
                await lay.save(sid3, {"a": "2"}, [], time.time(), replace=True)
                readd = await lay.load(sid3, time.time())
            out[layout_type.name] = {
                "resurrected": resurrected,
                "wrong_emptiness": emptied_wrongly,
                "pop_won": pop_won,
                "clear_readd": readd,
            }
    finally:
        await pool.close()
    return out

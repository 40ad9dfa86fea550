"""Which PostgreSQL layout for PostgresStore: one row per key, or one jsonb per session?

Run: ``.venv/bin/python -m bench.postgres_layout [--durable]`` (starts a private cluster
on a free loopback port; ``--durable`` keeps fsync and synchronous_commit on, as in
production, instead of the test settings). Raw asyncpg, no asgi_sessions code: each
layout's statements are written out here, each save is ONE statement (one round trip
with a warm statement cache).

- ``rows``: ``r_sessions`` (surrogate ``pk``, unique hashed ``id``) + ``r_data`` keyed
  ``(sid, key)`` with ``ON DELETE CASCADE``; a save is one call of a PL/pgSQL function
  that locks the session row first (so concurrent saves of one session queue, and a
  concurrent delete cannot leave orphan rows), deletes, upserts, and deletes the session
  if it is empty after the merge.
- ``jsonb``: ``j_sessions`` with ``data jsonb`` (key -> the serializer's text); a save is
  one ``UPDATE ... SET data = (data - deleted) || set`` (PostgreSQL re-reads the newest row
  version after a lock wait, so the merge is per key), and a second statement only when
  the merge left it empty.

Values are random text (TOAST compresses repeated characters to nothing, which would
flatter the jsonb layout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from tests.postgres_server import PostgresProcess, find_bindir

ROUNDS = 11
OPS = 200
BUCKET = 3600.0  # purge_after = expires_at floored to the hour (see HOT below)

SCHEMA = """
CREATE TABLE r_sessions (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id bytea NOT NULL UNIQUE,
    created_at float8 NOT NULL, updated_at float8 NOT NULL, expires_at float8 NOT NULL,
    purge_after float8 NOT NULL, expiry text, owner text
) WITH (fillfactor = 80);
CREATE INDEX r_sessions_purge ON r_sessions (purge_after);
CREATE TABLE r_data (
    sid bigint NOT NULL REFERENCES r_sessions (pk) ON DELETE CASCADE,
    key text NOT NULL, value text NOT NULL,
    PRIMARY KEY (sid, key)
) WITH (fillfactor = 80);

CREATE FUNCTION r_save(p_id bytea, p_keys text[], p_values text[], p_deleted text[],
                       p_replace bool, p_now float8, p_expires float8)
RETURNS bool LANGUAGE plpgsql AS $$
DECLARE v_pk bigint;
BEGIN
    UPDATE r_sessions SET updated_at = p_now, expires_at = p_expires,
        purge_after = floor(p_expires / 3600) * 3600
    WHERE id = p_id AND expires_at > p_now RETURNING pk INTO v_pk;
    IF NOT FOUND THEN RETURN NULL; END IF;
    IF p_replace THEN
        DELETE FROM r_data WHERE sid = v_pk AND key <> ALL (p_keys);
    ELSIF cardinality(p_deleted) > 0 THEN
        DELETE FROM r_data WHERE sid = v_pk AND key = ANY (p_deleted);
    END IF;
    INSERT INTO r_data (sid, key, value) SELECT v_pk, k, v FROM unnest(p_keys, p_values) AS u(k, v)
    ON CONFLICT (sid, key) DO UPDATE SET value = excluded.value;
    IF NOT EXISTS (SELECT FROM r_data WHERE sid = v_pk) THEN
        DELETE FROM r_sessions WHERE pk = v_pk;
        RETURN false;
    END IF;
    RETURN true;
END $$;

CREATE FUNCTION r_create(p_id bytea, p_keys text[], p_values text[], p_now float8,
                         p_expires float8) RETURNS void LANGUAGE plpgsql AS $$
DECLARE v_pk bigint;
BEGIN
    INSERT INTO r_sessions (id, created_at, updated_at, expires_at, purge_after)
    VALUES (p_id, p_now, p_now, p_expires, floor(p_expires / 3600) * 3600) RETURNING pk INTO v_pk;
    INSERT INTO r_data SELECT v_pk, k, v FROM unnest(p_keys, p_values) AS u(k, v);
END $$;

CREATE TABLE j_sessions (
    id bytea PRIMARY KEY, data jsonb NOT NULL,
    created_at float8 NOT NULL, updated_at float8 NOT NULL, expires_at float8 NOT NULL,
    purge_after float8 NOT NULL, expiry text, owner text
) WITH (fillfactor = 80);
CREATE INDEX j_sessions_purge ON j_sessions (purge_after);
"""

R_LOAD = """SELECT s.created_at, s.updated_at, s.expires_at, s.expiry, s.owner, d.key, d.value
FROM r_sessions s LEFT JOIN r_data d ON d.sid = s.pk WHERE s.id = $1 AND s.expires_at > $2"""
# The same load as one row: the keys and values as two arrays.
R_LOAD_ARRAYS = """SELECT s.created_at, s.updated_at, s.expires_at, s.expiry, s.owner,
    d.keys, d.values
FROM r_sessions s, LATERAL (SELECT array_agg(key) AS keys, array_agg(value) AS values
                            FROM r_data WHERE sid = s.pk) d
WHERE s.id = $1 AND s.expires_at > $2"""
R_SAVE = "SELECT r_save($1, $2, $3, $4, $5, $6, $7)"
R_ROTATE = "UPDATE r_sessions SET id = $2, updated_at = $3 WHERE id = $1 AND expires_at > $3"

J_LOAD = """SELECT created_at, updated_at, expires_at, expiry, owner, data::text
FROM j_sessions WHERE id = $1 AND expires_at > $2"""
J_SAVE = """UPDATE j_sessions SET
    data = CASE WHEN $4 THEN $2::jsonb ELSE (data - $3::text[]) || $2::jsonb END,
    updated_at = $5::float8, expires_at = $6::float8, purge_after = floor($6::float8 / 3600) * 3600
WHERE id = $1 AND expires_at > $5::float8 RETURNING data = '{}'::jsonb"""
J_DROP_EMPTY = "DELETE FROM j_sessions WHERE id = $1 AND data = '{}'::jsonb"
J_ROTATE = "UPDATE j_sessions SET id = $2, updated_at = $3 WHERE id = $1 AND expires_at > $3"
J_CREATE = """INSERT INTO j_sessions (id, data, created_at, updated_at, expires_at, purge_after)
VALUES ($1, $2::jsonb, $3::float8, $3, $4::float8, floor($4::float8 / 3600) * 3600)"""


def value(size: int) -> str:
    """A JSON-encoded random string of about ``size`` bytes."""
    return json.dumps(secrets.token_urlsafe(size)[:size])


def session(total: int, *, per_key: int = 100) -> dict[str, str]:
    return {f"key{i:05d}": value(per_key) for i in range(max(1, total // (per_key + 10)))}


def new_id() -> bytes:
    return secrets.token_bytes(32)


class Layout:
    name = ""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def create(self, sid: bytes, data: dict[str, str], now: float) -> None:
        raise NotImplementedError

    async def load(self, sid: bytes, now: float) -> dict[str, str] | None:
        raise NotImplementedError

    async def save(
        self, sid: bytes, set_: dict[str, str], deleted: list[str], now: float, *,
        replace: bool = False,
    ) -> bool | None:  # fmt: skip
        """True: saved; False: empty after the merge, deleted; None: the record was gone."""
        raise NotImplementedError

    async def rotate(self, old: bytes, new: bytes, now: float) -> bool:
        raise NotImplementedError


class Rows(Layout):
    name = "rows"

    async def create(self, sid: bytes, data: dict[str, str], now: float) -> None:
        await self.conn.execute(
            "SELECT r_create($1, $2, $3, $4, $5)", sid, list(data), list(data.values()), now,
            now + 86400,
        )  # fmt: skip

    async def load(self, sid: bytes, now: float) -> dict[str, str] | None:
        rows = await self.conn.fetch(R_LOAD, sid, now)
        return {r[5]: r[6] for r in rows if r[5] is not None} if rows else None

    async def load_arrays(self, sid: bytes, now: float) -> dict[str, str] | None:
        row = await self.conn.fetchrow(R_LOAD_ARRAYS, sid, now)
        return dict(zip(row[5] or (), row[6] or (), strict=True)) if row else None

    async def save(self, sid, set_, deleted, now, *, replace=False):  # type: ignore[no-untyped-def]
        return await self.conn.fetchval(
            R_SAVE, sid, list(set_), list(set_.values()), deleted, replace, now, now + 86400
        )

    async def rotate(self, old: bytes, new: bytes, now: float) -> bool:
        return bool(await self.conn.execute(R_ROTATE, old, new, now) == "UPDATE 1")


class Jsonb(Layout):
    name = "jsonb"

    async def create(self, sid: bytes, data: dict[str, str], now: float) -> None:
        await self.conn.execute(J_CREATE, sid, json.dumps(data), now, now + 86400)

    async def load(self, sid: bytes, now: float) -> dict[str, str] | None:
        row = await self.conn.fetchrow(J_LOAD, sid, now)
        return json.loads(row[5]) if row else None

    async def save(self, sid, set_, deleted, now, *, replace=False):  # type: ignore[no-untyped-def]
        empty = await self.conn.fetchval(
            J_SAVE, sid, json.dumps(set_), deleted, replace, now, now + 86400
        )
        if empty is None:
            return None
        if empty:
            await self.conn.execute(J_DROP_EMPTY, sid)
            return False
        return True

    async def rotate(self, old: bytes, new: bytes, now: float) -> bool:
        return bool(await self.conn.execute(J_ROTATE, old, new, now) == "UPDATE 1")


LAYOUTS: list[type[Layout]] = [Rows, Jsonb]

Op = Callable[[], Awaitable[Any]]


async def compare(variants: dict[str, Op]) -> dict[str, float]:
    """Median over interleaved rounds of the mean wall seconds per operation."""
    for op in variants.values():
        for _ in range(20):
            await op()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(ROUNDS):
        for name in names if round_ % 2 == 0 else reversed(names):
            started = time.perf_counter()
            for _ in range(OPS):
                await variants[name]()
            samples[name].append((time.perf_counter() - started) / OPS)
    return {name: statistics.median(s) for name, s in samples.items()}


async def latency(dsn: str, cache: int) -> None:
    conn = await asyncpg.connect(dsn, statement_cache_size=cache)
    now = time.time()
    variants: dict[str, Op] = {}
    raw_id = new_id()
    small = session(1024)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS raw (id bytea PRIMARY KEY, data text, expires_at float8)"
    )
    await conn.execute("INSERT INTO raw VALUES ($1, $2, $3)", raw_id, json.dumps(small), now + 1e5)
    one = {"key00000": value(100)}

    async def raw_read() -> None:
        await conn.fetchrow("SELECT data FROM raw WHERE id = $1 AND expires_at > $2", raw_id, now)

    async def raw_write() -> None:
        await conn.fetchrow("SELECT data FROM raw WHERE id = $1 AND expires_at > $2", raw_id, now)
        await conn.execute(
            "INSERT INTO raw VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
            "SET data = excluded.data, expires_at = excluded.expires_at",
            raw_id, json.dumps(small), now + 1e5,
        )  # fmt: skip

    variants["raw SELECT by PK (1 KB)"] = raw_read
    variants["raw SELECT + upsert (1 KB)"] = raw_write
    for layout_type in LAYOUTS:
        layout = layout_type(conn)
        for label, size in (("1 KB", 1024), ("100 KB", 100 * 1024)):
            sid = new_id()
            await layout.create(sid, session(size), now)
            variants[f"{layout.name}: load {label}"] = lambda lay=layout, s=sid: lay.load(s, now)
            if isinstance(layout, Rows):
                variants[f"rows: load {label} as 2 arrays"] = lambda lay=layout, s=sid: (
                    lay.load_arrays(s, now)
                )
            variants[f"{layout.name}: save 1 key of {label}"] = lambda lay=layout, s=sid: lay.save(
                s, one, [], time.time()
            )
        # A single 100 KB value next to small keys: change one small key.
        sid = new_id()
        await layout.create(sid, {**session(1024), "blob": value(100 * 1024)}, now)
        variants[f"{layout.name}: save 1 key of 1 KB + 100 KB blob"] = lambda lay=layout, s=sid: (
            lay.save(s, one, [], time.time())
        )
        rotating = [new_id()]
        await layout.create(rotating[0], session(1024), now)

        async def rotate(lay: Layout = layout, cur: list[bytes] = rotating) -> None:
            fresh = new_id()
            if not await lay.rotate(cur[0], fresh, time.time()):
                raise AssertionError("rotation lost the session")
            cur[0] = fresh

        variants[f"{layout.name}: rotate 1 KB"] = rotate
    results = await compare(variants)
    print(f"\n## latency, one connection, statement_cache_size={cache} "
          f"(median of {ROUNDS} rounds x {OPS} ops)")  # fmt: skip
    for name, seconds in results.items():
        print(f"  {name:<44} {seconds * 1e6:8.1f} µs")
    await conn.close()


async def wal(dsn: str) -> None:
    """WAL bytes written by one one-key save, by session size (the I/O a save really costs)."""
    print("\n## WAL bytes per one-key save (mean of 200 saves)")
    conn = await asyncpg.connect(dsn)
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
            for _ in range(200):
                await lay.save(sid, {"key00000": value(100)}, [], time.time())
            end = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
            per_save = await conn.fetchval("SELECT pg_wal_lsn_diff($1, $2)", end, start) / 200
            print(f"  {lay.name:<6} {label:<20} {per_save:9.0f} bytes")
    await conn.close()


async def concurrency(dsn: str) -> None:
    print("\n## 64 concurrent writers, 100 saves each, pool of 16 connections")
    pool = await asyncpg.create_pool(dsn, min_size=16, max_size=16, statement_cache_size=0)
    for layout_type in LAYOUTS:
        for sessions in (1, 64):
            ids = [new_id() for _ in range(sessions)]
            async with pool.acquire() as conn:
                for sid in ids:
                    await layout_type(conn).create(sid, {"seed": '"x"'}, time.time())
            errors: list[BaseException] = []
            last: dict[tuple[bytes, str], str] = {}

            async def writer(n: int, ids: list[bytes] = ids, lt: type[Layout] = layout_type,
                             errors: list[BaseException] = errors,
                             last: dict[tuple[bytes, str], str] = last) -> None:  # fmt: skip
                sid = ids[n % len(ids)]
                for i in range(100):
                    try:
                        async with pool.acquire() as conn:
                            v = json.dumps(f"{n}:{i}")
                            # every writer: its own key, plus one key they all share
                            if (
                                await lt(conn).save(sid, {f"w{n}": v, "shared": v}, [], time.time())
                                is not True
                            ):
                                raise AssertionError("save lost the session")
                        last[(sid, f"w{n}")] = v
                    except (asyncpg.PostgresError, AssertionError) as exc:
                        errors.append(exc)

            started = time.perf_counter()
            await asyncio.gather(*(writer(n) for n in range(64)))
            elapsed = time.perf_counter() - started
            lost = 0
            async with pool.acquire() as conn:
                for (sid, key), v in last.items():
                    loaded = await layout_type(conn).load(sid, time.time())
                    lost += loaded is None or loaded.get(key) != v
            rate = 6400 / elapsed
            print(f"  {layout_type.name:<6} {sessions:>2} session(s): {rate:7.0f} saves/s, "
                  f"{len(errors)} errors {sorted({type(e).__name__ for e in errors})}, "
                  f"{lost} lost per-key writes")  # fmt: skip
    await pool.close()


async def semantics(dsn: str) -> None:
    """Delete wins, emptiness after the merge, remove + re-add in one save."""
    print("\n## merge semantics under concurrency")
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8, statement_cache_size=0)
    for layout_type in LAYOUTS:
        resurrected = 0
        emptied_wrongly = 0
        add_lost = 0
        for _ in range(50):
            sid = new_id()
            async with pool.acquire() as conn:
                await layout_type(conn).create(sid, {"a": "1"}, time.time())

            async def save(set_: dict[str, str], deleted: list[str], sid: bytes = sid,
                           lt: type[Layout] = layout_type) -> bool | None:  # fmt: skip
                async with pool.acquire() as conn:
                    return await lt(conn).save(sid, set_, deleted, time.time())

            async def delete(sid: bytes = sid, lt: type[Layout] = layout_type) -> None:
                async with pool.acquire() as conn:
                    table = "r_sessions" if lt is Rows else "j_sessions"
                    await conn.execute(f"DELETE FROM {table} WHERE id = $1", sid)  # noqa: S608

            # a logout racing saves: afterwards the session must stay gone
            await asyncio.gather(*(save({f"k{i}": "2"}, []) for i in range(8)), delete())
            async with pool.acquire() as conn:
                resurrected += await layout_type(conn).load(sid, time.time()) is not None
            # pop of the last key racing an add: the session must live on with the added key
            sid2 = new_id()
            async with pool.acquire() as conn:
                await layout_type(conn).create(sid2, {"a": "1"}, time.time())
            _, added = await asyncio.gather(
                save({}, ["a"], sid=sid2), save({"b": "2"}, [], sid=sid2)
            )
            async with pool.acquire() as conn:
                loaded = await layout_type(conn).load(sid2, time.time())
            # Either the add merged first (the session lives on with b), or the pop emptied
            # and deleted it first and the add found it gone (it answers 400).
            emptied_wrongly += (loaded, added) not in (({"b": "2"}, True), (None, None))
            add_lost += added is None
        async with pool.acquire() as conn:
            sid3 = new_id()
            lay = layout_type(conn)
            await lay.create(sid3, {"a": "1", "b": "1"}, time.time())
            await lay.save(sid3, {"a": "2"}, [], time.time(), replace=True)  # clear(), re-add a
            readd = await lay.load(sid3, time.time())
        print(f"  {layout_type.name:<6} resurrected after delete: {resurrected}/50, "
              f"wrong emptiness: {emptied_wrongly}/50 (pop won the race {add_lost}/50), "
              f"clear()+re-add -> {readd}")  # fmt: skip
    await pool.close()


async def hot(dsn: str) -> None:
    """HOT updates and size after 5,000 one-key saves on 1,000 sessions of 1 KB."""
    print("\n## HOT updates after 5,000 one-key saves over 1,000 sessions")
    conn = await asyncpg.connect(dsn)
    for variant, index in (("hour bucket", "purge_after"), ("expires_at", "expires_at")):
        await conn.execute("DROP INDEX IF EXISTS r_sessions_purge, j_sessions_purge")
        await conn.execute(f"CREATE INDEX r_sessions_purge ON r_sessions ({index})")
        await conn.execute(f"CREATE INDEX j_sessions_purge ON j_sessions ({index})")
        for layout_type in LAYOUTS:
            lay = layout_type(conn)
            ids = [new_id() for _ in range(1000)]
            for sid in ids:
                await lay.create(sid, session(1024), time.time())
            tables = ("r_sessions", "r_data") if layout_type is Rows else ("j_sessions",)
            before = {t: await conn.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = $1", t)
                for t in tables}  # fmt: skip
            for i in range(5000):
                await lay.save(ids[i % 1000], {"key00001": value(100)}, [], time.time())
            await asyncio.sleep(0.6)  # statistics are flushed at most every 500 ms
            parts = []
            for t in tables:
                row = await conn.fetchrow(
                    "SELECT n_tup_upd, n_tup_hot_upd, pg_total_relation_size(relid) AS size "
                    "FROM pg_stat_user_tables WHERE relname = $1", t)  # fmt: skip
                upd = row[0] - before[t][0]
                parts.append(f"{t}: {row[1] - before[t][1]}/{upd} HOT, {row[2] // 1024} KiB")
            print(f"  index on {variant:<12} {layout_type.name:<6} " + "; ".join(parts))
    await conn.close()


async def main(durable: bool) -> None:
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL not found (apt-get install postgresql)")
    server = PostgresProcess(bindir, durable=durable)
    try:
        server.start()
        conn = await asyncpg.connect(server.dsn)
        version = await conn.fetchval("SHOW server_version")
        await conn.execute(SCHEMA)
        await conn.close()
        print(f"PostgreSQL {version}, fsync {'on' if durable else 'off'}, loopback TCP")
        await latency(server.dsn, cache=100)
        await latency(server.dsn, cache=0)
        await wal(server.dsn)
        await concurrency(server.dsn)
        await semantics(server.dsn)
        await hot(server.dsn)
    finally:
        server.remove()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durable", action="store_true", help="fsync and synchronous_commit on")
    asyncio.run(main(parser.parse_args().durable))

"""What only PostgresStore does: its tables, round trips, schema life, Spring Session
JDBC's known failures, the purge, configuration and outages.

The behaviour every store shares runs on PostgreSQL through the ``store`` fixture; these
tests look inside the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_sessions import MissingDependency, SessionMiddleware, SessionStoreError
from asgi_sessions.devices import encode_device
from asgi_sessions.errors import DISTRIBUTION, ImproperlyConfigured, SessionInterrupted
from asgi_sessions.expiry import resolve_expires_at
from asgi_sessions.stores import store_from_url
from asgi_sessions.stores.base import hash_key, public_id_for
from asgi_sessions.stores.postgres import SCHEMA_VERSION, PostgresStore
from asgi_sessions.stores.postgres_sql import SqlNames
from tests.clock import FakeClock
from tests.postgres_server import PostgresProcess
from tests.support import encoded, session_write

KEY = "k" * 43
SECRET = "postgres-store-test-secret-long-enough-0"


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection to the test's schema, to look at what the store wrote."""
    connection = await asyncpg.connect(postgres_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def pstore(postgres_url: str, clock: FakeClock) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(postgres_url, clock=clock) as store:
        yield store


async def create(store: PostgresStore, key: str, data: dict[str, Any], now: float) -> None:
    await store.save(key, session_write(now, set=encoded(data), create=True))


class RoundTripCounter:
    """A loopback TCP proxy in front of the server that counts request/response turns:
    each time the client speaks after the server did is one round trip."""

    def __init__(self, port: int) -> None:
        self.upstream_port = port
        self.turns = 0
        self._last = "server"
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, side: str) -> None:
            try:
                while data := await src.read(65536):
                    if side == "client" and self._last == "server":
                        self.turns += 1
                    self._last = side
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, "client"), pipe(up_reader, writer, "server"))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def counted_dsn(postgres_url: str) -> AsyncIterator[tuple[str, RoundTripCounter]]:
    """The test's DSN, but through a proxy that counts round trips."""
    from urllib.parse import urlsplit

    parts = urlsplit(postgres_url)
    assert parts.port is not None
    counter = RoundTripCounter(parts.port)
    port = await counter.start()
    try:
        yield parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}").geturl(), counter
    finally:
        await counter.stop()


# -- layout -----------------------------------------------------------------------------


async def test_a_session_is_one_row_plus_one_row_per_key_under_the_hash_of_its_key(
    pstore: PostgresStore, db: asyncpg.Connection, clock: FakeClock
) -> None:
    await create(pstore, KEY, {"user": "ada", "cart": [1, 2]}, clock())
    rows = await db.fetch("SELECT pk, id FROM asgi_sessions")
    assert [bytes(row["id"]) for row in rows] == [hashlib.sha256(KEY.encode()).digest()]
    data = await db.fetch("SELECT sid, key, value FROM asgi_sessions_data ORDER BY key")
    assert [(r["sid"], r["key"], r["value"]) for r in data] == [
        (rows[0]["pk"], "cart", "[1, 2]"),
        (rows[0]["pk"], "user", '"ada"'),
    ]
    dump = json.dumps([list(map(str, r.values())) for r in await db.fetch("TABLE asgi_sessions")])
    assert KEY not in dump


async def test_the_schema_records_its_version(
    pstore: PostgresStore, db: asyncpg.Connection
) -> None:
    await pstore.load(KEY)
    assert await db.fetchval("SELECT version FROM asgi_sessions_meta") == SCHEMA_VERSION == 3


async def test_a_rotation_moves_one_row_and_no_data(
    pstore: PostgresStore, db: asyncpg.Connection, clock: FakeClock
) -> None:
    await create(pstore, KEY, {"a": 1}, clock())
    pk = await db.fetchval("SELECT pk FROM asgi_sessions")
    saved = await pstore.rotate(KEY, session_write(clock(), set=encoded({"b": 2})))
    assert await pstore.load(KEY) is None
    assert (await pstore.load(saved.key)).data == {"a": "1", "b": "2"}  # type: ignore[union-attr]
    assert await db.fetchval("SELECT pk FROM asgi_sessions") == pk
    assert await db.fetchval("SELECT count(*) FROM asgi_sessions_data WHERE sid = $1", pk) == 2


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    setting=st.one_of(
        st.none(),
        st.integers(-(10**9), 10**9).map(lambda n: f"s:{n}"),
        st.floats(0, 4e9, allow_nan=False).map(lambda t: f"a:{t!r}"),
    ),
    now=st.floats(1e9, 2e9, allow_nan=False),
    age=st.floats(0, 1e8, allow_nan=False),
    cap=st.one_of(st.none(), st.floats(0, 4e9, allow_nan=False)),
)
async def test_the_sql_expiry_rule_equals_the_python_one(
    pstore: PostgresStore,
    db: asyncpg.Connection,
    setting: str | None,
    now: float,
    age: float,
    cap: float | None,
) -> None:
    await pstore.load(KEY)  # creates the schema
    ours = await db.fetchval(
        "SELECT asgi_sessions_expires_at($1, $2, $3, $4)", setting, now, now + age, cap
    )
    assert ours == resolve_expires_at(setting, now, now + age, cap)


async def test_a_listed_public_id_is_the_one_python_derives(
    pstore: PostgresStore, db: asyncpg.Connection, clock: FakeClock
) -> None:
    await pstore.save(KEY, session_write(clock(), set=encoded({"a": 1}), create=True, owner="o"))
    [listed] = await pstore.list_sessions("o")
    assert listed.public_id == public_id_for(hash_key(KEY))
    assert await pstore.revoke("o", listed.public_id) == 1


async def test_saves_within_the_hour_are_hot_updates(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    # Every save moves expires_at; only its hour bucket is indexed, so the session row is
    # rewritten in place (HOT: no new index entries) until the bucket changes.
    async with PostgresStore(postgres_url, clock=clock, max_size=1) as store:
        clock.now = 1_800_000_000.0  # the top of an hour: 50 saves stay within it
        await create(store, KEY, {"a": 0}, clock())
        for n in range(50):
            clock.advance(1)
            await store.save(KEY, session_write(clock(), set=encoded({"a": n})))
        pool = store._pool
        assert pool is not None
        await pool.execute("SELECT pg_stat_force_next_flush()")
        await pool.execute("SELECT 1")  # the flush happens at the end of a transaction
    for _ in range(50):
        await db.execute("SELECT pg_stat_clear_snapshot()")
        updates, hot = await db.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relid = 'asgi_sessions'::regclass"
        )
        if updates >= 50:
            break
        await asyncio.sleep(0.1)
    assert (updates, hot) == (50, 50)


# -- round trips --------------------------------------------------------------------------


async def test_a_load_a_save_a_rotation_and_a_delete_are_one_round_trip_each(
    counted_dsn: tuple[str, RoundTripCounter], clock: FakeClock
) -> None:
    dsn, counter = counted_dsn
    async with PostgresStore(dsn, clock=clock, min_size=1, max_size=1) as store:
        await create(store, KEY, {"a": 1}, clock())
        key = KEY
        # Warm: asyncpg prepares each statement once per connection.
        for _ in range(2):
            await store.load(key)
            await store.save(key, session_write(clock(), set=encoded({"b": 2})))
            key = (await store.rotate(key, session_write(clock()))).key
        await create(store, "gone" * 11, {"x": 1}, clock())
        await store.delete("gone" * 11)
        await create(store, "gone" * 11, {"x": 1}, clock())
        change = session_write(clock(), set=encoded({"c": 3}), deleted=frozenset("a"))
        before = counter.turns
        await store.load(key)
        assert counter.turns - before == 1
        before = counter.turns
        await store.save(key, change)
        assert counter.turns - before == 1
        before = counter.turns
        await store.rotate(key, session_write(clock()))
        assert counter.turns - before == 1
        before = counter.turns
        await store.delete("gone" * 11)
        assert counter.turns - before == 1


async def test_without_prepared_statements_an_operation_costs_two_round_trips(
    counted_dsn: tuple[str, RoundTripCounter], clock: FakeClock
) -> None:
    # The PgBouncer (< 1.21) mode: asyncpg prepares an unnamed statement each time.
    dsn, counter = counted_dsn
    async with PostgresStore(dsn, clock=clock, max_size=1, prepared_statements=False) as store:
        await create(store, KEY, {"a": 1}, clock())
        before = counter.turns
        assert (await store.load(KEY)).data == {"a": "1"}  # type: ignore[union-attr]
        assert counter.turns - before == 2
        before = counter.turns
        await store.save(KEY, session_write(clock(), set=encoded({"b": 2})))
        assert counter.turns - before == 2


# -- Spring Session JDBC's failures ------------------------------------------------------


async def test_concurrent_first_inserts_of_one_key_never_collide(
    pstore: PostgresStore, clock: FakeClock
) -> None:
    # spring-session #1213 / #2564: two requests adding the same attribute at once got a
    # duplicate-key error on the second INSERT.
    await create(pstore, KEY, {"seed": 0}, clock())
    for round_ in range(5):
        key = f"new{round_}"
        await asyncio.gather(
            *(
                pstore.save(KEY, session_write(clock(), set=encoded({key: n, f"own{n}": n})))
                for n in range(32)
            )
        )
        stored = await pstore.load(KEY)
        assert stored is not None
        assert key in stored.data
        assert all(f"own{n}" in stored.data for n in range(32))


async def test_a_save_racing_a_delete_never_violates_the_foreign_key_nor_leaves_orphans(
    pstore: PostgresStore, db: asyncpg.Connection, clock: FakeClock
) -> None:
    # spring-session #1031: an attribute INSERT after a concurrent session DELETE hit
    # the foreign key. Here the save finds the session gone, and says so.
    for trial in range(20):
        key = f"trial{trial:02d}" + "x" * 36
        await create(pstore, key, {"a": 1}, clock())

        async def save(n: int, key: str = key) -> str:
            try:
                await pstore.save(key, session_write(clock(), set=encoded({f"k{n}": n})))
            except SessionInterrupted:
                return "interrupted"
            return "saved"

        outcomes = await asyncio.gather(*(save(n) for n in range(6)), pstore.delete(key))
        assert set(outcomes[:-1]) <= {"saved", "interrupted"}
        assert await pstore.load(key) is None
    orphans = await db.fetchval(
        "SELECT count(*) FROM asgi_sessions_data d "
        "WHERE NOT EXISTS (SELECT FROM asgi_sessions s WHERE s.pk = d.sid)"
    )
    assert orphans == 0
    assert await db.fetchval("SELECT count(*) FROM asgi_sessions") == 0


async def test_a_key_removed_and_added_again_in_one_save_is_kept(
    pstore: PostgresStore, clock: FakeClock
) -> None:
    # spring-session #1070 / #1110: remove then re-add of one attribute in one request
    # violated the primary key.
    await create(pstore, KEY, {"a": 1, "b": 2}, clock())
    both = session_write(clock(), set=encoded({"a": 3}), deleted=frozenset({"a", "b"}))
    await pstore.save(KEY, both)
    assert (await pstore.load(KEY)).data == {"a": "3"}  # type: ignore[union-attr]
    cleared = session_write(clock(), set=encoded({"a": 4, "c": 5}), replace=True)
    await pstore.save(KEY, cleared)
    assert (await pstore.load(KEY)).data == {"a": "4", "c": "5"}  # type: ignore[union-attr]


async def test_the_purge_running_beside_writers_never_deadlocks_and_spares_the_living(
    postgres_url: str, clock: FakeClock, db: asyncpg.Connection
) -> None:
    # spring-session #1739 / #1922: cleanup deadlocked with concurrent session updates.
    # Here both lock the session row first, and the purge skips rows a save holds.
    async with PostgresStore(postgres_url, clock=clock, purge_batch=5, max_size=8) as store:
        now = clock()
        for n in range(60):
            ttl = -10 if n % 2 else 3600  # every other session already expired
            await store.save(
                f"s{n:02d}" + "x" * 40,
                session_write(now, set=encoded({"a": n, "b": n}), create=True, ttl=ttl),
            )

        async def writer(n: int) -> None:
            key = f"s{n:02d}" + "x" * 40
            for i in range(10):
                try:
                    await store.save(key, session_write(clock(), set=encoded({"a": i})))
                except SessionInterrupted:
                    assert n % 2  # only the expired ones may be gone
                    return

        async def purger() -> int:
            removed = 0
            for _ in range(5):
                removed += await store.clear_expired()
            return removed

        # Two purges at once too (cron on two machines): they share the work.
        results = await asyncio.gather(*(writer(n) for n in range(60)), purger(), purger())
        assert results[-1] + results[-2] == 30
        assert await db.fetchval("SELECT count(*) FROM asgi_sessions") == 30
        for n in range(0, 60, 2):
            assert (await store.load(f"s{n:02d}" + "x" * 40)).data["a"] == "9"  # type: ignore[union-attr]


# -- the purge -----------------------------------------------------------------------------


async def test_the_purge_deletes_in_batches_past_sessions_still_alive_in_the_same_hour(
    postgres_url: str, clock: FakeClock, db: asyncpg.Connection
) -> None:
    async with PostgresStore(postgres_url, clock=clock, purge_batch=3) as store:
        now = clock()
        # All within one hour bucket of purge_after: alive ones sit between the dead.
        for n in range(20):
            ttl = 60 + n * 10
            await store.save(
                f"p{n:02d}" + "x" * 40,
                session_write(now, set=encoded({"n": n}), create=True, ttl=ttl),
            )
        clock.advance(60 + 10 * 10 + 1)  # the first 11 are dead now
        assert await store.clear_expired() == 11
        assert await db.fetchval("SELECT count(*) FROM asgi_sessions") == 9
        assert await db.fetchval("SELECT count(*) FROM asgi_sessions_data") == 9
        assert await store.clear_expired() == 0


async def test_an_expired_record_under_a_new_id_is_replaced_not_a_collision(
    pstore: PostgresStore, clock: FakeClock
) -> None:
    await pstore.save(KEY, session_write(clock(), set=encoded({"old": 1}), create=True, ttl=10))
    clock.advance(11)
    await pstore.save(KEY, session_write(clock(), set=encoded({"new": 1}), create=True))
    assert (await pstore.load(KEY)).data == {"new": "1"}  # type: ignore[union-attr]


async def test_a_purge_whose_batches_run_slow_makes_them_smaller_and_still_finishes(
    postgres_url: str, clock: FakeClock
) -> None:
    # purge_batch_seconds far below any real batch: every batch halves the next one.
    async with PostgresStore(
        postgres_url, clock=clock, purge_batch=40, purge_batch_seconds=1e-9
    ) as store:
        for n in range(100):
            await store.save(
                f"e{n:03d}" + "x" * 40, session_write(clock(), set=encoded({"n": n}), create=True)
            )
        clock.advance(3601)
        assert await store.clear_expired() == 100


async def test_two_rotations_racing_for_one_new_key_leave_one_winner(
    pstore: PostgresStore, clock: FakeClock
) -> None:
    # Both check that the new id is free, then one of them takes it: the other must see a
    # KeyCollision (which the base class retries with another key), never an error.
    from asgi_sessions.errors import KeyCollision

    for trial in range(10):
        a, b, new = (f"{name}{trial}" + "x" * 40 for name in ("a", "b", "n"))
        await create(pstore, a, {"who": "a"}, clock())
        await create(pstore, b, {"who": "b"}, clock())
        outcomes = await asyncio.gather(
            pstore.move(hash_key(a), hash_key(new), session_write(clock())),
            pstore.move(hash_key(b), hash_key(new), session_write(clock())),
            return_exceptions=True,
        )
        assert sorted(type(o).__name__ for o in outcomes) == ["KeyCollision", "WriteOutcome"]
        assert any(isinstance(o, KeyCollision) for o in outcomes)


async def test_ids_that_are_not_hashes_of_keys_name_no_record(pstore: PostgresStore) -> None:
    assert await pstore.read("not-hex") is None
    await pstore.remove("not-hex")  # nothing to delete, no error
    with pytest.raises(ValueError, match="SHA-256"):
        await pstore.write("not-hex", session_write(0, set=encoded({"a": 1}), create=True))


# -- the schema ------------------------------------------------------------------------------


async def test_many_stores_starting_at_once_create_the_schema_once(
    postgres_url: str, db: asyncpg.Connection
) -> None:
    stores = [PostgresStore(postgres_url, min_size=1, max_size=1) for _ in range(8)]
    try:
        assert await asyncio.gather(*(s.load(KEY) for s in stores)) == [None] * 8
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))
    assert await db.fetchval("SELECT count(*) FROM asgi_sessions_meta") == 1


async def test_a_schema_of_another_version_is_refused_with_the_fix(
    postgres_url: str, db: asyncpg.Connection
) -> None:
    async with PostgresStore(postgres_url) as store:
        await store.load(KEY)
    await db.execute("UPDATE asgi_sessions_meta SET version = 99")
    async with PostgresStore(postgres_url) as store:
        with pytest.raises(SessionStoreError, match=r"schema version 99.*uses 3.*Upgrade"):
            await store.load(KEY)


# Each earlier schema exactly as its release created it: postgres_schema.sql at version 1
# (before commit 83e1eab) and 2 (commit 5e8fa7c, before "your devices").
OLD_SCHEMAS = Path(__file__).parent / "postgres_schemas"

# key: (owner, expiry setting, seconds left, data)
OLD_SESSIONS: dict[str, tuple[str | None, str | None, float, dict[str, object]]] = {
    "anon": (None, None, 3600, {"cart": [1, 2], "theme": "dark"}),
    "ann-laptop": ("ann", None, 3600, {"user": "ann", "n": 1}),
    "ann-phone": ("ann", "s:60", 60, {"user": "ann"}),
    "bob": ("bob", None, 3600, {"user": "bob"}),
    "gone": ("ann", None, -5, {"user": "ann"}),
}


async def make_old_schema(db: asyncpg.Connection, version: int, now: float) -> None:
    """The tables of schema ``version``, holding OLD_SESSIONS as that version stored them."""
    await db.execute(SqlNames("asgi_sessions", None).render(
        (OLD_SCHEMAS / f"v{version}.sql").read_text("utf-8")
    ))  # fmt: skip
    for i, (key, (owner, expiry, left, data)) in enumerate(OLD_SESSIONS.items()):
        pk = await db.fetchval(
            "INSERT INTO asgi_sessions (id, created_at, updated_at, expires_at, purge_after,"
            " expiry, owner) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING pk",
            bytes.fromhex(hash_key(key)), now - 100 + i, now - 50, now + left,
            math.floor((now + left) / 3600) * 3600, expiry, owner,
        )  # fmt: skip
        await db.executemany(
            "INSERT INTO asgi_sessions_data VALUES ($1, $2, $3)",
            [(pk, k, v) for k, v in encoded(data).items()],
        )


async def device_of(db: asyncpg.Connection, key: str) -> str | None:
    """The stored device (a load leaves it out: postgres_queries.sql, "load")."""
    device: str | None = await db.fetchval(
        "SELECT device FROM asgi_sessions WHERE id = $1", bytes.fromhex(hash_key(key))
    )
    return device


async def device_columns(db: asyncpg.Connection) -> int:
    return int(await db.fetchval(
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = 'asgi_sessions' AND column_name = 'device'"
    ))  # fmt: skip


@pytest.mark.parametrize("version", [1, 2])
async def test_an_older_schema_migrates_in_place_and_keeps_every_session(
    version: int, postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    await make_old_schema(db, version, clock())
    assert await device_columns(db) == 0
    firefox = encode_device("Firefox", None)
    async with PostgresStore(postgres_url, clock=clock) as store:
        for key, (owner, expiry, left, data) in OLD_SESSIONS.items():
            stored = await store.load(key)
            if left < 0:
                assert stored is None
                continue
            assert stored is not None
            assert (stored.owner, stored.expiry) == (owner, expiry)
            assert stored.data == encoded(data)
            assert await device_of(db, key) is None
        assert await db.fetchval("SELECT version FROM asgi_sessions_meta") == SCHEMA_VERSION
        assert await device_columns(db) == 1
        # One write function, the current one (the old one is dropped, not overloaded).
        assert await db.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname = 'asgi_sessions_write'"
            " AND pronamespace = current_schema()::regnamespace"
        ) == 1  # fmt: skip

        listed = await store.list_sessions("ann")
        assert [s.public_id for s in listed] == [
            public_id_for(hash_key(key)) for key in ("ann-laptop", "ann-phone")
        ]
        assert [(s.user_agent, s.ip, s.label) for s in listed] == [
            (None, None, "Unknown device")
        ] * 2

        # A save that keeps the owner keeps the unknown device (and merges a counter:
        # version 2's write); a sign-in records one; a rotation carries it to the new key.
        change = session_write(clock(), set=encoded({"m": 1}))
        await store.save("ann-laptop", dataclasses.replace(change, merges={"n": 2}))
        await store.save("anon", session_write(clock(), owner="ann", device=firefox))
        moved = await store.rotate("anon", session_write(clock(), set=encoded({"m": 2})))
        assert await store.load("anon") is None
        laptop, anon = await store.load("ann-laptop"), await store.load(moved.key)
        assert laptop is not None and anon is not None
        assert laptop.data == encoded({"user": "ann", "n": 3, "m": 1})
        assert anon.owner == "ann"
        assert (await device_of(db, "ann-laptop"), await device_of(db, moved.key)) == (
            None,
            firefox,
        )
        assert anon.data == encoded({"cart": [1, 2], "theme": "dark", "m": 2})
        assert {s.user_agent for s in await store.list_sessions("ann")} == {None, "Firefox"}

        # The expired record is still there for clear_expired(), and goes.
        assert await store.clear_expired() == 1
        assert (await store.stats()).sessions == 4

    # Opening a migrated schema again changes nothing; signing out forgets the device.
    async with PostgresStore(postgres_url, clock=clock) as store:
        assert await store.load(moved.key) is not None
        assert await device_of(db, moved.key) == firefox
        await store.save(moved.key, session_write(clock(), owner=None))
        assert await device_of(db, moved.key) is None
        assert [s.user_agent for s in await store.list_sessions("ann")] == [None, None]
    assert await device_columns(db) == 1


async def test_stores_starting_at_once_on_a_version_2_schema_migrate_it_once(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    await make_old_schema(db, 2, clock())
    # The test holds the stores' advisory lock while they start, so all of them are
    # waiting when it lets go: then one migrates, and the others must find version 3
    # under the lock (reading the version before taking it, they would all migrate, and
    # the second DROP FUNCTION would fail).
    digest = hashlib.sha256(b'asgi_sessions:"asgi_sessions"').digest()
    stores = [PostgresStore(postgres_url, clock=clock, min_size=1, max_size=1) for _ in range(4)]
    try:
        async with db.transaction():
            await db.execute(
                "SELECT pg_advisory_xact_lock($1)", int.from_bytes(digest[:8], "big", signed=True)
            )
            loads = [asyncio.create_task(store.load("ann-laptop")) for store in stores]
            await asyncio.sleep(0.3)
            assert not any(load.done() for load in loads)
        for stored in await asyncio.gather(*loads):
            assert stored is not None
            assert stored.owner == "ann"
        await asyncio.gather(*(
            store.save("ann-laptop", session_write(clock(), set=encoded({f"by{i}": i})))
            for i, store in enumerate(stores)
        ))  # fmt: skip
        stored = await stores[0].load("ann-laptop")
        assert stored is not None
        assert stored.data == encoded({"user": "ann", "n": 1} | {f"by{i}": i for i in range(4)})
    finally:
        await asyncio.gather(*(store.aclose() for store in stores))
    assert await db.fetchval("SELECT version FROM asgi_sessions_meta") == SCHEMA_VERSION
    assert await device_columns(db) == 1


async def test_with_create_schema_false_an_older_schema_is_refused_and_left_as_it_is(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    await make_old_schema(db, 2, clock())
    async with PostgresStore(postgres_url, create_schema=False, clock=clock) as store:
        with pytest.raises(
            SessionStoreError, match=r"schema version 2, which .* migrates to 3.*create_schema=True"
        ):
            await store.load("bob")
    assert await db.fetchval("SELECT version FROM asgi_sessions_meta") == 2
    assert await device_columns(db) == 0


async def test_with_create_schema_false_a_missing_schema_is_an_error_and_none_is_made(
    postgres_url: str, db: asyncpg.Connection
) -> None:
    async with PostgresStore(postgres_url, create_schema=False) as store:
        with pytest.raises(SessionStoreError, match="create_schema"):
            await store.load(KEY)
    assert await db.fetchval("SELECT to_regclass('asgi_sessions')") is None
    async with PostgresStore(postgres_url) as store:
        await store.load(KEY)
    async with PostgresStore(postgres_url, create_schema=False) as store:
        assert await store.load(KEY) is None


async def test_table_and_schema_options_keep_stores_apart(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    async with (
        PostgresStore(postgres_url, clock=clock) as default,
        PostgresStore(postgres_url, table="web_sessions", clock=clock) as named,
        PostgresStore(postgres_url, schema="auth", clock=clock) as elsewhere,
    ):
        await create(default, KEY, {"who": "default"}, clock())
        await create(named, KEY, {"who": "named"}, clock())
        await create(elsewhere, KEY, {"who": "elsewhere"}, clock())
        for store, who in ((default, "default"), (named, "named"), (elsewhere, "elsewhere")):
            assert (await store.load(KEY)).data == {"who": json.dumps(who)}  # type: ignore[union-attr]
    assert await db.fetchval("SELECT count(*) FROM web_sessions_data") == 1
    assert await db.fetchval("SELECT count(*) FROM auth.asgi_sessions") == 1


async def test_an_app_user_with_only_the_documented_grants_can_do_everything(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    # As the README says: the schema created once by a privileged user, the app's user
    # given DML on the tables and EXECUTE on the functions, and create_schema=False.
    async with PostgresStore(postgres_url) as owner_store:
        await owner_store.load(KEY)
    schema = await db.fetchval("SELECT current_schema()")
    role = f"app_{schema}"
    await db.execute(f'CREATE ROLE "{role}" LOGIN')
    await db.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
    await db.execute(
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON asgi_sessions, asgi_sessions_data TO "{role}"'
    )
    await db.execute(f'GRANT SELECT ON asgi_sessions_meta TO "{role}"')
    await db.execute(f'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA "{schema}" TO "{role}"')
    try:
        url = postgres_url.replace("postgres@", f"{role}@", 1)
        async with PostgresStore(url, create_schema=False, clock=clock) as store:
            await store.save(
                KEY, session_write(clock(), set=encoded({"a": 1}), create=True, owner="o")
            )
            await store.save(KEY, session_write(clock(), set=encoded({"b": 2})))
            key = (await store.rotate(KEY, session_write(clock()))).key
            assert (await store.load(key)).data == {"a": "1", "b": "2"}  # type: ignore[union-attr]
            assert len(await store.list_sessions("o")) == 1
            clock.advance(10 * 24 * 3600)
            assert await store.clear_expired() == 1
            assert await store.revoke_all("o") == 0
    finally:
        await db.execute(f'DROP OWNED BY "{role}"')
        await db.execute(f'DROP ROLE "{role}"')


@pytest.mark.parametrize("name", ["", "1abc", "a-b", 'x"; DROP TABLE y; --', "a" * 42])
def test_a_table_name_that_is_not_a_plain_identifier_is_refused(name: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="plain identifier"):
        PostgresStore("postgresql://localhost/app", table=name)
    with pytest.raises(ImproperlyConfigured, match="plain identifier"):
        PostgresStore("postgresql://localhost/app", schema=name)


# -- configuration ---------------------------------------------------------------------------


def test_a_dsn_or_a_pool_is_needed_but_not_both() -> None:
    with pytest.raises(ImproperlyConfigured, match="either a DSN"):
        PostgresStore()
    with pytest.raises(ImproperlyConfigured, match="either a DSN"):
        PostgresStore("postgresql://localhost/app", pool=object())  # type: ignore[arg-type]


@pytest.mark.parametrize(("low", "high"), [(-1, 5), (5, 4), (0, 0)])
def test_impossible_pool_bounds_are_refused(low: int, high: int) -> None:
    with pytest.raises(ImproperlyConfigured, match="pool bounds"):
        PostgresStore("postgresql://localhost/app", min_size=low, max_size=high)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://user:s3cret@localhost/app", "needs a postgresql:// URL"),
        ("postgresql://user:s3cret@[::1/app", "Invalid PostgreSQL URL"),
        ("postgresql://user:s3cret@localhost:port/app", "Invalid PostgreSQL URL"),
    ],
)
def test_a_bad_url_is_refused_without_its_password(url: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message) as caught:
        PostgresStore(url)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "POSTGRESQL"])
def test_store_from_url_takes_both_schemes(scheme: str) -> None:
    store = store_from_url(f"{scheme}://user:s3cret@db.internal:5433/app", max_size=3)
    assert isinstance(store, PostgresStore)
    shown = f"{scheme}://user:***@db.internal:5433/app"
    assert repr(store) == f"PostgresStore({shown!r}, table='asgi_sessions')"
    assert "s3cret" not in repr(store)


async def test_an_unreachable_server_fails_with_a_store_error_without_the_password(
    clock: FakeClock,
) -> None:
    from tests.redis_server import free_port

    url = f"postgresql://app:s3cret@127.0.0.1:{free_port()}/app"
    async with PostgresStore(url, clock=clock, connect_timeout=2) as store:
        with pytest.raises(SessionStoreError) as caught:
            await store.load(KEY)
    message = str(caught.value)
    assert "s3cret" not in message and "app:***@127.0.0.1" in message
    assert "could not load a session" in message


async def test_a_wrong_password_fails_with_a_store_error_without_the_password(
    postgres_url: str, db: asyncpg.Connection, clock: FakeClock
) -> None:
    # The test server trusts loopback; a role without LOGIN is refused whatever it sends.
    await db.execute("CREATE ROLE nologin_user PASSWORD 'Sup3rS3cret' NOLOGIN")
    try:
        url = postgres_url.replace("postgres@", "nologin_user:Sup3rS3cret@", 1)
        async with PostgresStore(url, clock=clock) as store:
            with pytest.raises(SessionStoreError) as caught:
                await store.load(KEY)
        assert "Sup3rS3cret" not in str(caught.value)
        assert "not permitted to log in" in str(caught.value)
    finally:
        await db.execute("DROP ROLE nologin_user")


async def test_a_pool_the_app_owns_stays_open_and_a_closed_store_refuses_use(
    postgres_url: str, clock: FakeClock
) -> None:
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
    try:
        store = PostgresStore(pool=pool, clock=clock)
        assert "pool=" in repr(store)
        await create(store, KEY, {"a": 1}, clock())
        await store.aclose()
        assert await pool.fetchval("SELECT count(*) FROM asgi_sessions") == 1
        with pytest.raises(SessionStoreError, match="closed"):
            await store.load(KEY)
    finally:
        await pool.close()


async def test_from_url_closes_the_pool_it_opened(postgres_url: str) -> None:
    store = PostgresStore.from_url(postgres_url)
    await store.load(KEY)
    pool = store._pool
    assert pool is not None
    await store.aclose()
    await store.aclose()  # twice is fine
    assert pool._closed


def test_without_asyncpg_the_error_is_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(MissingDependency, match=rf"pip install '{DISTRIBUTION}\[postgres\]'"):
        PostgresStore("postgresql://localhost/app")


# -- outages ---------------------------------------------------------------------------------


async def test_a_server_restart_fails_requests_closed_then_recovers_without_a_new_store(
    postgres_process: PostgresProcess,
) -> None:
    async def count(request: Request) -> JSONResponse:
        session = await request.state.session
        session["n"] = session.get("n", 0) + 1
        return JSONResponse({"n": session["n"]})

    async def untouched(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    store = PostgresStore(postgres_process.dsn, connect_timeout=2, command_timeout=2)
    app = Starlette(
        routes=[Route("/count", count), Route("/untouched", untouched)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with store, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.get("/count")
        assert first.json() == {"n": 1}
        cookie = client.cookies["session"]

        await asyncio.to_thread(postgres_process.stop)
        down = await client.get("/count")
        assert down.status_code == 503
        assert "retry-after" in down.headers
        assert "set-cookie" not in down.headers  # the cookie is left alone
        assert (await client.get("/untouched")).status_code == 200
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as newcomer:
            first_save = await newcomer.get("/count")  # loads nothing, then fails to save
        assert first_save.status_code == 503
        # A create whose outcome is unknown sends the key it tried (never a deletion).
        assert "max-age=0" not in first_save.headers["set-cookie"].lower()

        await asyncio.to_thread(postgres_process.start)
        # The pool's connections died with the server; asyncpg replaces them.
        back = await client.get("/count")
        assert back.status_code == 200, back.text
        assert back.json() == {"n": 2}
        assert client.cookies["session"] == cookie

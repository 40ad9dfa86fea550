"""What only the SQLite store promises: the file's settings, files made by earlier schema
versions (migrated, or read as they are when read-only), hashing at rest, concurrency
across tasks and processes, cleanup, and errors that say what to check."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import subprocess
import sys
import time
from datetime import UTC
from pathlib import Path

import pytest

from asgi_sessions import SessionStoreError
from asgi_sessions.devices import encode_device
from asgi_sessions.errors import KeyCollision, SessionInterrupted
from asgi_sessions.stores.base import SessionWrite, hash_key, public_id_for
from asgi_sessions.stores.sqlite import SCHEMA_VERSION, SQLiteStore, purge_after
from tests.clock import FakeClock
from tests.support import encoded, session_write

ROOT = Path(__file__).resolve().parents[2]
KEY = "k" * 43


@pytest.fixture
async def db(tmp_path: Path, clock: FakeClock):  # type: ignore[no-untyped-def]
    async with SQLiteStore(tmp_path / "sessions.sqlite3", clock=clock) as store:
        yield store


def pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def test_the_file_is_in_wal_mode_with_a_versioned_schema(
    db: SQLiteStore, clock: FakeClock
) -> None:
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"a": 1})))
    assert pragma(Path(db.path), "journal_mode") == "wal"
    assert pragma(Path(db.path), "user_version") == SCHEMA_VERSION


async def test_the_schema_is_created_lazily_and_the_directory_too(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "new" / "dir" / "sessions.sqlite3"
    async with SQLiteStore(path, clock=clock) as store:
        assert not path.exists()
        assert await store.load(KEY) is None
        assert path.exists()


async def test_a_file_with_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    async with SQLiteStore(path) as store:
        with pytest.raises(SessionStoreError, match="schema version"):
            await store.load(KEY)


async def test_the_raw_key_never_reaches_the_file(db: SQLiteStore, clock: FakeClock) -> None:
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"user": "ann"})))
    await db.save(KEY, session_write(clock(), set=encoded({"more": 2})))
    await db.aclose()
    raw = b"".join(p.read_bytes() for p in Path(db.path).parent.iterdir() if p.is_file())
    assert KEY.encode() not in raw
    assert hash_key(KEY).encode() in raw


async def test_concurrent_saves_of_different_keys_all_survive(
    db: SQLiteStore, clock: FakeClock
) -> None:
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"seed": 0})))
    await asyncio.gather(
        *(db.save(KEY, session_write(clock(), set=encoded({f"k{i}": i}))) for i in range(50))
    )
    stored = await db.load(KEY)
    assert stored is not None
    assert len(stored.data) == 51


async def test_a_save_after_expiry_is_interrupted_and_does_not_resurrect(
    db: SQLiteStore, clock: FakeClock
) -> None:
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"a": 1}), ttl=10))
    clock.advance(11)
    with pytest.raises(SessionInterrupted):
        await db.save(KEY, session_write(clock(), set=encoded({"b": 2})))
    assert await db.load(KEY) is None


async def test_create_over_an_expired_record_starts_clean_but_a_live_one_collides(
    db: SQLiteStore, clock: FakeClock
) -> None:
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"old": 1}), ttl=10))
    with pytest.raises(KeyCollision):
        await db.save(KEY, session_write(clock(), create=True, set=encoded({"new": 2})))
    clock.advance(11)
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"new": 2})))
    stored = await db.load(KEY)
    assert stored is not None
    assert stored.data == {"new": "2"}


async def test_an_expired_row_is_never_returned_even_before_cleanup(
    db: SQLiteStore, clock: FakeClock
) -> None:
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"a": 1}), ttl=10))
    clock.advance(10)
    assert await db.load(KEY) is None
    assert await db.get(KEY) is None
    conn = sqlite3.connect(db.path)
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
    conn.close()


async def test_clear_expired_counts_across_batches_and_keeps_live_ones(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite3", clock=clock, purge_batch=7) as store:
        for i in range(30):
            await store.save(
                f"gone{i}", session_write(clock(), create=True, set=encoded({"i": i}), ttl=5)
            )
        await store.save(
            "stays", session_write(clock(), create=True, set=encoded({"i": 1}), ttl=100)
        )
        clock.advance(6)
        assert await store.clear_expired() == 30
        assert await store.clear_expired() == 0
        assert await store.load("stays") is not None
    conn = sqlite3.connect(tmp_path / "s.sqlite3")
    assert conn.execute("SELECT count(*) FROM session_data").fetchone()[0] == 1
    conn.close()


async def test_get_returns_a_record_with_an_aware_utc_expiry(
    db: SQLiteStore, clock: FakeClock
) -> None:
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"cart": [1, 2]}), ttl=60))
    record = await db.get(KEY)
    assert record is not None
    assert record.session_key == KEY
    assert record.expire_date.tzinfo is UTC
    assert record.expire_date.timestamp() == pytest.approx(clock() + 60)
    assert record.get_decoded() == {"cart": [1, 2]}


async def test_the_owner_index_lists_and_revokes_by_public_id(
    db: SQLiteStore, clock: FakeClock
) -> None:
    for i in range(3):
        await db.save(
            f"key{i}", session_write(clock(), create=True, set=encoded({"i": i}), owner="ann")
        )
        clock.advance(1)
    await db.save("bob", session_write(clock(), create=True, set=encoded({"i": 0}), owner="bob"))
    listed = await db.list_sessions("ann")
    assert [s.public_id for s in listed] == [public_id_for(hash_key(f"key{i}")) for i in range(3)]
    assert await db.revoke("ann", listed[0].public_id) == 1
    assert await db.revoke("ann", listed[0].public_id) == 0
    assert await db.revoke("bob", listed[1].public_id) == 0
    assert await db.revoke_all("ann", keep=listed[2].public_id) == 1
    assert [s.public_id for s in await db.list_sessions("ann")] == [listed[2].public_id]
    assert await db.load("key2") is not None
    assert await db.load("bob") is not None


async def test_owner_lookups_use_the_index_not_a_scan(db: SQLiteStore) -> None:
    await db.load(KEY)
    conn = sqlite3.connect(db.path)
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE owner = ? AND expires_at > ?",
        ("ann", 0),
    ).fetchall()
    purge = conn.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM sessions WHERE purge_after <= ? AND expires_at <= ? "
        "ORDER BY purge_after LIMIT 5",
        (0, 0),
    ).fetchall()
    conn.close()
    assert "sessions_owner" in str(plan)
    assert "sessions_purge_after" in str(purge)
    assert "TEMP B-TREE" not in str(purge)


async def test_a_path_that_is_a_directory_fails_with_a_store_error(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path) as store:
        with pytest.raises(SessionStoreError, match="writable") as caught:
            await store.load(KEY)
    assert isinstance(caught.value.__cause__, sqlite3.Error)


async def test_a_directory_that_cannot_be_created_fails_with_a_store_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("not a directory")
    async with SQLiteStore(tmp_path / "file" / "sub" / "s.sqlite3") as store:
        with pytest.raises(SessionStoreError, match="create its directory") as caught:
            await store.save(KEY, session_write(0, create=True, set=encoded({"a": 1})))
    assert isinstance(caught.value.__cause__, OSError)


async def test_a_read_only_database_fails_saves_with_a_store_error(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite3", clock=clock) as store:
        await store.save(KEY, session_write(clock(), create=True, set=encoded({"a": 1})))
        # query_only binds every user, root included (chmod 444 does not stop root).
        assert store._db is not None
        await store._db.execute("PRAGMA query_only = 1")
        with pytest.raises(SessionStoreError, match="readonly database") as caught:
            await store.save(KEY, session_write(clock(), set=encoded({"b": 1})))
        assert isinstance(caught.value.__cause__, sqlite3.Error)
        assert (await store.load(KEY)).data == {"a": "1"}  # type: ignore[union-attr]


async def test_aclose_is_idempotent_and_the_store_then_refuses_use(
    db: SQLiteStore, clock: FakeClock
) -> None:
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"a": 1})))
    await db.aclose()
    await db.aclose()
    with pytest.raises(SessionStoreError, match="is closed"):
        await db.load(KEY)


# -- files made by earlier versions ---------------------------------------------------

# Version 1 exactly as the release before "your devices" created it (its _SCHEMA, no
# device column), in WAL mode as it left every file.
V1_SCHEMA = """
PRAGMA journal_mode = WAL;
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    expiry TEXT,
    owner TEXT
) WITHOUT ROWID;
CREATE INDEX sessions_expires_at ON sessions (expires_at);
CREATE INDEX sessions_owner ON sessions (owner, created_at) WHERE owner IS NOT NULL;
CREATE TABLE session_data (
    sid TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (sid, key)
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""

# key: (owner, expiry setting, seconds left, data)
V1_SESSIONS: dict[str, tuple[str | None, str | None, float, dict[str, object]]] = {
    "anon": (None, None, 3600, {"cart": [1, 2], "theme": "dark"}),
    "ann-laptop": ("ann", None, 3600, {"user": "ann"}),
    "ann-phone": ("ann", '{"seconds":60}', 60, {"user": "ann", "n": 3}),
    "bob": ("bob", None, 3600, {"user": "bob"}),
    "gone": ("ann", None, -5, {"user": "ann"}),
}


def make_v1_file(path: Path, now: float) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V1_SCHEMA)
    for i, (key, (owner, expiry, left, data)) in enumerate(V1_SESSIONS.items()):
        sid = hash_key(key)
        conn.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)",
            (sid, now - 100 + i, now - 50, now + left, expiry, owner),
        )
        conn.executemany(
            "INSERT INTO session_data VALUES (?, ?, ?)",
            [(sid, k, v) for k, v in encoded(data).items()],
        )
    conn.close()


def columns(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[1] for row in conn.execute("PRAGMA table_info(sessions)")]
    finally:
        conn.close()


def indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        return {name for (name,) in rows if not name.startswith("sqlite_autoindex")}
    finally:
        conn.close()


def purge_buckets_match(path: Path) -> bool:
    """Every record's purge_after is its end floored to the hour (so never later)."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT expires_at, purge_after FROM sessions").fetchall()
    finally:
        conn.close()
    return bool(rows) and all(
        purge == purge_after(expires) <= expires and purge % 3600 == 0 for expires, purge in rows
    )


def with_device(change: SessionWrite, device: str) -> SessionWrite:
    return dataclasses.replace(change, device=device)


async def test_a_version_1_file_migrates_in_place_and_keeps_every_session(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "v1.sqlite3"
    make_v1_file(path, clock())
    firefox = encode_device("Firefox", None)
    async with SQLiteStore(path, clock=clock) as store:
        for key, (owner, expiry, left, data) in V1_SESSIONS.items():
            stored = await store.load(key)
            if left < 0:
                assert stored is None
                continue
            assert stored is not None
            assert (stored.owner, stored.expiry, stored.device) == (owner, expiry, None)
            assert stored.data == encoded(data)
        assert pragma(path, "user_version") == SCHEMA_VERSION == 3
        assert columns(path)[-2:] == ["device", "purge_after"]
        assert purge_buckets_match(path)

        listed = await store.list_sessions("ann")
        assert [s.public_id for s in listed] == [
            public_id_for(hash_key(key)) for key in ("ann-laptop", "ann-phone")
        ]
        assert [(s.user_agent, s.ip, s.label) for s in listed] == [
            (None, None, "Unknown device")
        ] * 2

        # A save that keeps the owner keeps the unknown device; a sign-in records one;
        # a rotation carries it to the new key.
        await store.save("ann-laptop", session_write(clock(), set=encoded({"n": 1})))
        await store.save("anon", with_device(session_write(clock(), owner="ann"), firefox))
        moved = await store.rotate("anon", session_write(clock(), set=encoded({"m": 2})))
        assert await store.load("anon") is None
        laptop, anon = await store.load("ann-laptop"), await store.load(moved.key)
        assert laptop is not None and anon is not None
        assert (laptop.device, laptop.data) == (None, {"user": '"ann"', "n": "1"})
        assert (anon.device, anon.owner) == (firefox, "ann")
        assert anon.data == encoded({"cart": [1, 2], "theme": "dark", "m": 2})
        assert {s.user_agent for s in await store.list_sessions("ann")} == {None, "Firefox"}

        # The expired record is still there for clear_expired(), and goes.
        assert await store.clear_expired() == 1
        assert (await store.stats()).sessions == 4
        assert purge_buckets_match(path)

    # Opening a migrated file again changes nothing.
    async with SQLiteStore(path, clock=clock) as store:
        stored = await store.load(moved.key)
        assert stored is not None
        assert stored.device == firefox
    assert columns(path).count("device") == columns(path).count("purge_after") == 1
    assert indexes(path) == {"sessions_owner", "sessions_purge_after"}


async def test_two_stores_opening_one_version_1_file_at_once_both_work(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "v1.sqlite3"
    make_v1_file(path, clock())
    # A third connection holds the write lock while both stores open, so both are
    # waiting in BEGIN IMMEDIATE when it lets go: then one migrates, and the other must
    # find version 2 once it gets the lock (reading the version before BEGIN, both would
    # find 1 and the second would fail on "duplicate column name: device").
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    stores = [SQLiteStore(path, clock=clock) for _ in range(2)]
    try:
        loads = [asyncio.create_task(store.load("ann-laptop")) for store in stores]
        await asyncio.sleep(0.3)
        assert not any(load.done() for load in loads)
        blocker.execute("COMMIT")
        blocker.close()
        for stored in await asyncio.gather(*loads):
            assert stored is not None
            assert (stored.owner, stored.device, stored.data) == ("ann", None, {"user": '"ann"'})
        await asyncio.gather(
            *(
                store.save("ann-laptop", session_write(clock(), set=encoded({f"by{i}": i})))
                for i, store in enumerate(stores)
            )
        )
        for store in stores:
            stored = await store.load("ann-laptop")
            assert stored is not None
            assert stored.data == encoded({"user": "ann", "by0": 0, "by1": 1})
            assert len(await store.list_sessions("ann")) == 2
    finally:
        for store in stores:
            await store.aclose()
    assert pragma(path, "user_version") == SCHEMA_VERSION
    assert columns(path).count("device") == 1


async def test_a_read_only_store_reads_a_version_1_file_as_it_is(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "v1.sqlite3"
    make_v1_file(path, clock())
    async with SQLiteStore(path, clock=clock, read_only=True) as reader:
        stored = await reader.load("ann-phone")
        assert stored is not None
        assert (stored.owner, stored.device) == ("ann", None)
        assert [s.user_agent for s in await reader.list_sessions("ann")] == [None, None]
        stats = await reader.stats()
        assert (stats.sessions, stats.expired, stats.owners) == (4, 1, 2)
        assert pragma(path, "user_version") == 1
        assert "device" not in columns(path)

        # A writer migrates the file under the reader, which goes on reading.
        async with SQLiteStore(path, clock=clock) as writer:
            await writer.save(
                "bob",
                with_device(session_write(clock(), owner="bob"), encode_device("Safari", None)),
            )
        assert pragma(path, "user_version") == SCHEMA_VERSION
        stored = await reader.load("bob")
        assert stored is not None
        assert stored.data == encoded({"user": "bob"})
        assert len(await reader.list_sessions("bob")) == 1


# Version 2 exactly as the release before the coarse purge index created it: the device
# column, and the purge's index on expires_at.
V2_SCHEMA = V1_SCHEMA.replace(
    "    owner TEXT\n) WITHOUT ROWID;", "    owner TEXT,\n    device TEXT\n) WITHOUT ROWID;"
).replace("PRAGMA user_version = 1;", "PRAGMA user_version = 2;")


def make_v2_file(path: Path, now: float) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V2_SCHEMA)
    for i, (key, (owner, expiry, left, data)) in enumerate(V1_SESSIONS.items()):
        sid = hash_key(key)
        device = encode_device(f"Browser {i}", None) if owner else None
        conn.execute(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
            (sid, now - 100 + i, now - 50, now + left, expiry, owner, device),
        )
        conn.executemany(
            "INSERT INTO session_data VALUES (?, ?, ?)",
            [(sid, k, v) for k, v in encoded(data).items()],
        )
    conn.close()


async def test_a_version_2_file_migrates_in_place_and_keeps_every_session(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "v2.sqlite3"
    make_v2_file(path, clock())
    assert "device" in columns(path) and "purge_after" not in columns(path)
    async with SQLiteStore(path, clock=clock) as store:
        for i, (key, (owner, expiry, left, data)) in enumerate(V1_SESSIONS.items()):
            stored = await store.load(key)
            if left < 0:
                assert stored is None
                continue
            assert stored is not None
            device = encode_device(f"Browser {i}", None) if owner else None
            assert (stored.owner, stored.expiry, stored.device) == (owner, expiry, device)
            assert stored.data == encoded(data)
        assert pragma(path, "user_version") == SCHEMA_VERSION == 3
        assert indexes(path) == {"sessions_owner", "sessions_purge_after"}
        assert purge_buckets_match(path)
        assert [s.user_agent for s in await store.list_sessions("ann")] == [
            "Browser 1",
            "Browser 2",
        ]
        await store.save("anon", session_write(clock(), set=encoded({"n": 1})))
        stored = await store.load("anon")
        assert stored is not None
        assert stored.data == encoded({"cart": [1, 2], "theme": "dark", "n": 1})
        assert await store.clear_expired() == 1
        assert (await store.stats()).sessions == 4
    assert columns(path).count("purge_after") == 1


async def test_a_read_only_store_reads_a_version_2_file_as_it_is(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "v2.sqlite3"
    make_v2_file(path, clock())
    async with SQLiteStore(path, clock=clock, read_only=True) as reader:
        stored = await reader.load("ann-phone")
        assert stored is not None
        assert stored.device == encode_device("Browser 2", None)
        stats = await reader.stats()
        assert (stats.sessions, stats.expired, stats.owners) == (4, 1, 2)
        assert pragma(path, "user_version") == 2
        assert "purge_after" not in columns(path)


# -- the purge index ------------------------------------------------------------------


def purge_after_of(path: Path, key: str) -> tuple[float, float]:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT expires_at, purge_after FROM sessions WHERE id = ?", (hash_key(key),)
        ).fetchone()
    finally:
        conn.close()
    return row[0], row[1]


async def test_purge_after_follows_the_end_both_ways_and_the_purge_finds_every_expired_record(
    db: SQLiteStore, clock: FakeClock
) -> None:
    path = Path(db.path)
    clock.now = 1_800_000_000.0  # on the hour
    await db.save(KEY, session_write(clock(), create=True, set=encoded({"a": 1}), ttl=7200))
    assert purge_after_of(path, KEY) == (clock() + 7200, clock() + 7200)
    # Renewals within the hour move the end but not purge_after (the one-statement path).
    for _ in range(3):
        clock.advance(600)
        await db.save(KEY, session_write(clock(), set=encoded({"a": 2}), ttl=7200))
        expires, purge = purge_after_of(path, KEY)
        assert (expires, purge) == (clock() + 7200, 1_800_000_000.0 + 7200)
    # Past the hour, purge_after moves with it.
    clock.advance(1800)
    await db.save(KEY, session_write(clock(), set=encoded({"a": 3}), ttl=7200))
    assert purge_after_of(path, KEY) == (clock() + 7200, 1_800_000_000.0 + 3 * 3600)
    # An expiry setting of its own (the general path) moves it back, before the old hour.
    await db.save(KEY, session_write(clock(), expiry="s:60"))
    expires, purge = purge_after_of(path, KEY)
    assert expires == clock() + 60
    assert purge == purge_after(expires) <= expires
    # And the purge finds it as soon as it has ended, though its old hour is hours away.
    await db.save("other", session_write(clock(), create=True, set=encoded({"b": 1})))
    clock.advance(61)
    assert await db.clear_expired() == 1
    assert await db.load(KEY) is None
    assert await db.load("other") is not None
    assert purge_buckets_match(path)


async def test_a_renewal_within_the_hour_writes_no_index_page(
    db: SQLiteStore, clock: FakeClock
) -> None:
    clock.now = 1_800_000_000.0
    for n in range(200):  # enough records that the table and the index differ in pages
        await db.save(f"k{n}", session_write(clock(), create=True, set=encoded({"a": n})))
    await db.aclose()
    path = Path(db.path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    async with SQLiteStore(path, clock=clock) as store:
        await store.load("k7")  # opened: its set-up writes nothing to the WAL after this
        before = Path(f"{path}-wal").stat().st_size
        clock.advance(60)
        await store.save("k7", session_write(clock(), set=encoded({"a": -1})))
        written = Path(f"{path}-wal").stat().st_size - before
    # One frame for the sessions row, one for its session_data row: none for an index.
    page = pragma(path, "page_size")
    assert isinstance(page, int)
    assert written // (page + 24) == 2


# -- several processes on one file ----------------------------------------------------

HAMMER = """
import asyncio, json, sys, time
from asgi_sessions.errors import SessionStoreError
from asgi_sessions.stores.base import SessionWrite
from asgi_sessions.stores.sqlite import SQLiteStore

path, worker, deferred, start = sys.argv[1], sys.argv[2], sys.argv[3] == "1", float(sys.argv[4])

class Deferred(SQLiteStore):
    _begin = "BEGIN DEFERRED"
    _busy_retries = 0

def write(now, create, key, value):
    return SessionWrite(set={key: json.dumps(value)}, deleted=frozenset(), replace=False,
                        create=create, now=now, default_expires_at=now + 3600, expires_cap=None,
                        created_at=now)

async def main():
    store = (Deferred if deferred else SQLiteStore)(path)
    locked = other = ok = 0
    async with store:
        await store.load("warm-up")
        while time.time() < start:
            await asyncio.sleep(0.005)
        for i in range(400):
            try:
                # One session shared by every process, and a new one each time: creating
                # reads before it writes (is the key taken?), the pattern DEFERRED breaks.
                await store.save("shared", write(time.time(), False, f"{worker}-{i}", i))
                await store.save(f"new-{worker}-{i}", write(time.time(), True, "n", i))
                ok += 1
            except SessionStoreError as exc:
                if "locked" in str(exc):
                    locked += 1
                else:
                    other += 1
    print(json.dumps({"ok": ok, "locked": locked, "other": other}))

asyncio.run(main())
"""


def hammer(path: Path, *, processes: int, deferred: bool) -> list[dict[str, int]]:
    conn = sqlite3.connect(path)
    conn.close()
    seed = subprocess.run(
        [sys.executable, "-c", SEED, str(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert seed.returncode == 0, seed.stderr
    start = str(time.time() + 1.5)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, str(path), str(n), "1" if deferred else "0", start],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(processes)
    ]
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        results.append(json.loads(out))
    return results


SEED = """
import asyncio, json, sys, time
from asgi_sessions.stores.base import SessionWrite
from asgi_sessions.stores.sqlite import SQLiteStore

async def main():
    now = time.time()
    async with SQLiteStore(sys.argv[1]) as store:
        await store.save("shared", SessionWrite(set={"seed": "0"}, deleted=frozenset(),
            replace=False, create=True, now=now, default_expires_at=now + 3600,
            expires_cap=None, created_at=now))

asyncio.run(main())
"""


def test_several_processes_saving_to_one_file_never_see_database_is_locked(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.sqlite3"
    results = hammer(path, processes=3, deferred=False)
    assert sum(r["locked"] + r["other"] for r in results) == 0
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT count(*) FROM session_data").fetchone()[0]
    conn.close()
    assert rows == 1 + 3 * 400 * 2


def test_the_deferred_read_then_write_pattern_does_hit_database_is_locked(
    tmp_path: Path,
) -> None:
    # Proves the test above can fail: the same load with BEGIN DEFERRED and no retry.
    results = hammer(tmp_path / "shared.sqlite3", processes=3, deferred=True)
    assert sum(r["locked"] for r in results) > 0

"""SQLiteStore: sessions in one SQLite file, through aiosqlite (the default store).

Two tables: ``sessions`` holds one row per session (keyed by the store id, never the key)
and ``session_data`` one row per (session, top-level key), so a save that changes one key
rewrites one small row whatever the size of the session, and a load is one JOIN.

Each hook is one function run on aiosqlite's connection thread, so a load or a save costs
a single hop off the event loop however many statements it runs. Writes use
``BEGIN IMMEDIATE``: a deferred transaction that reads and then writes gets "database is
locked" at once when another process wrote meanwhile, ignoring ``busy_timeout``.

The schema's version is SQLite's ``user_version``. Version 2 added ``sessions.device`` (the
"your devices" text, :mod:`asgi_sessions.devices`); version 3 moved the purge's index from
``expires_at``, which every save moves, to ``purge_after``, the end floored to the hour,
which a save rewrites about once an hour. Opening an older file migrates it in place; a
read-only store reads a version 1 or 2 file as it is (on version 1, every device unknown).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import urllib.parse
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ..errors import KeyCollision, SessionInterrupted, SessionStoreError
from ..events import read_found_expired
from ..expiry import resolve_expires_at
from .base import (
    IMPORT_MARKER_KEY,
    Clock,
    OwnedSession,
    SessionWrite,
    Store,
    StoredSession,
    StoreStats,
    WriteOutcome,
    merge_value,
    public_id_for,
)

__all__ = ["SQLiteStore"]

T = TypeVar("T")

SCHEMA_VERSION = 3

# Granularity of ``purge_after``: a save whose new end falls in the hour of the old one
# leaves the purge index alone (an UPDATE rewrites an index whenever its SET names an
# indexed column, changed or not: one B-tree page more written per commit).
PURGE_BUCKET = 3600.0


def purge_after(expires_at: float) -> float:
    """``expires_at`` floored to :data:`PURGE_BUCKET`: never later, so the purge finds it."""
    return expires_at - expires_at % PURGE_BUCKET


_SCHEMA = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    expiry TEXT,
    owner TEXT,
    device TEXT,
    purge_after REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_purge_after ON sessions (purge_after);
CREATE INDEX sessions_owner ON sessions (owner, created_at) WHERE owner IS NOT NULL;
CREATE TABLE session_data (
    sid TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (sid, key)
) WITHOUT ROWID;
"""

# What takes a file from version N to N + 1. Adding a nullable column rewrites no row (a NULL
# device reads as "unknown"); version 3 fills purge_after in every row, one pass.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE sessions ADD COLUMN device TEXT",),
    2: (
        "ALTER TABLE sessions ADD COLUMN purge_after REAL NOT NULL DEFAULT 0",
        "UPDATE sessions SET purge_after = purge_after_of(expires_at)",
        "DROP INDEX sessions_expires_at",
        "CREATE INDEX sessions_purge_after ON sessions (purge_after)",
    ),
}

# An expired record still answers, as one row without data: the same lookup tells
# "expired" from "missing" (for the expired event) and reads no data of a dead session.
_LOAD = """
SELECT s.created_at, s.updated_at, s.expires_at, s.expiry, s.owner, {device}, d.key, d.value
FROM sessions AS s LEFT JOIN session_data AS d ON d.sid = s.id AND s.expires_at > ?
WHERE s.id = ?
"""
_LIST = (
    "SELECT id, created_at, updated_at, expires_at, {device} FROM sessions "
    "WHERE owner = ? AND expires_at > ? ORDER BY created_at, id"
)
_INSERT = (
    "INSERT INTO sessions "
    "(id, created_at, updated_at, expires_at, expiry, owner, device, purge_after) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# The commonest save: a live record with the default expiry setting and the same owner, its
# end still in the same hour. One statement instead of a read and a write; when it matches
# no row (gone, or anything uncommon) the general path below decides.
_RENEW = (
    "UPDATE sessions SET updated_at = ?, expires_at = ? "
    "WHERE id = ? AND expires_at > ? AND expiry IS NULL AND purge_after = ?"
)


def _update(moved: bool, owner_changed: bool, rebucket: bool) -> str:
    # The device is set exactly when the owner changes; otherwise the row keeps its own,
    # and a save pays nothing for it. Setting the id (the primary key) costs a delete and
    # an insert inside SQLite, so only a move does; purge_after only when its hour changes.
    columns = ["id"] if moved else []
    columns += ["updated_at", "expires_at", "expiry", "owner"]
    columns += ["device"] if owner_changed else []
    columns += ["purge_after"] if rebucket else []
    return f"UPDATE sessions SET {', '.join(c + ' = ?' for c in columns)} WHERE id = ?"  # noqa: S608


_UPDATE = {  # (moved, owner_changed, rebucket): statement
    (moved, owner, rebucket): _update(moved, owner, rebucket)
    for moved in (False, True)
    for owner in (False, True)
    for rebucket in (False, True)
}
_PUT = "INSERT OR REPLACE INTO session_data (sid, key, value) VALUES (?, ?, ?)"
_DROP_KEY = "DELETE FROM session_data WHERE sid = ? AND key = ?"
_GET_KEY = "SELECT value FROM session_data WHERE sid = ? AND key = ?"
_DROP_DATA = "DELETE FROM session_data WHERE sid = ?"
_DROP_SESSION = "DELETE FROM sessions WHERE id = ?"
_LIVE_META = (
    "SELECT created_at, expiry, owner, purge_after FROM sessions WHERE id = ? AND expires_at > ?"
)
_HAS_DATA = "SELECT 1 FROM session_data WHERE sid = ? LIMIT 1"

# How often a write that still finds the file locked after busy_timeout is tried again.
_BUSY_RETRIES = 3


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class SQLiteStore(Store):
    """Keeps sessions in an SQLite file shared by every worker process on the machine.

    Args:
        path: the database file; its directory is created if missing.
        busy_timeout: seconds a writer waits for another process's write to finish.
        purge_batch: expired sessions deleted per transaction by ``clear_expired()``.
        read_only: open an existing file read-only (SQLite's ``mode=ro``): no schema is
            created or migrated and the journal mode is left alone; any write fails. A
            version 1 file reads with every device unknown. The CLI's ``stats``, ``show``
            and ``sessions`` use it.
    """

    # The transaction a read-modify-write opens; only a test switches it, to prove that
    # the concurrency test catches the deferred pattern.
    _begin = "BEGIN IMMEDIATE"
    _busy_retries = _BUSY_RETRIES
    # The reading queries; a read-only store on a version 1 file swaps in NULL devices.
    _load = _LOAD.format(device="s.device")
    _list = _LIST.format(device="device")

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = time.time,
        busy_timeout: float = 5.0,
        purge_batch: int = 1000,
        read_only: bool = False,
    ) -> None:
        super().__init__(clock=clock)
        self.path = os.fspath(path)
        self.read_only = read_only
        self.busy_timeout = busy_timeout
        self.purge_batch = max(1, purge_batch)
        self._db: aiosqlite.Connection | None = None
        self._open_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    # -- plumbing -------------------------------------------------------------------

    def _failure(self, action: str, exc: BaseException) -> SessionStoreError:
        return SessionStoreError(
            f"SQLite session store {self.path!r} could not {action}: {exc}. Check that the "
            "path is right, that its directory exists and is writable by this process "
            "(SQLite also writes -wal and -shm files next to it), and that the disk is not full."
        )

    async def _connection(self) -> aiosqlite.Connection:
        if self._db is not None:
            return self._db
        self._require_open()
        async with self._open_lock:
            self._require_open()
            if self._db is None:
                self._db = await self._open()
        return self._db

    async def _open(self) -> aiosqlite.Connection:
        if self.read_only:
            return await self._open_read_only()
        if self.path != ":memory:":
            try:
                await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                raise self._failure("create its directory", exc) from exc
        # isolation_level=None: we issue BEGIN ourselves, so reads stay in autocommit.
        db = aiosqlite.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        # aiosqlite's worker thread is not a daemon: a store nobody closed (an app driven
        # without lifespan, say) would keep the interpreter from exiting. Committed data is
        # safe if it dies with the process; SQLite rolls back what was not committed.
        db._thread.daemon = True
        try:
            await db
        except sqlite3.Error as exc:
            raise self._failure("open the database", exc) from exc
        try:
            await self._call(db, "set up its schema", self._set_up)
        except BaseException:
            await db.close()
            raise
        return db

    async def _open_read_only(self) -> aiosqlite.Connection:
        uri = "file:" + urllib.parse.quote(self.path) + "?mode=ro"
        db = aiosqlite.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
        db._thread.daemon = True
        try:
            await db
        except sqlite3.Error as exc:
            raise self._failure("open the database read-only", exc) from exc
        try:
            await self._call(db, "read its schema", self._check_schema)
        except BaseException:
            await db.close()
            raise
        return db

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'sessions'"
        ).fetchone()[0]
        if not tables:
            raise SessionStoreError(
                f"SQLite file {self.path!r} has no sessions table: it is not a session store, "
                "or no app has used it as one yet."
            )
        if version == 1:
            # It cannot migrate; everything but the device is there (a writer that opens
            # the file meanwhile migrates it, and these queries still work then).
            self._load = _LOAD.format(device="NULL")
            self._list = _LIST.format(device="NULL")
        elif version not in (2, SCHEMA_VERSION):  # version 2 lacks only purge_after
            raise SessionStoreError(
                f"SQLite session store {self.path!r} has schema version {version}, but this "
                f"version of asgi-server-sessions reads 1 to {SCHEMA_VERSION}."
            )

    def _set_up(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a power cut may lose the last commits, never corrupt the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        # The version is read inside the write transaction: of two processes opening an
        # old file at once, the second waits for the first's migration and then finds
        # nothing to do. DDL is transactional in SQLite: a failed migration leaves the file
        # as it was.
        conn.create_function("purge_after_of", 1, purge_after, deterministic=True)
        with _transaction(conn, "BEGIN IMMEDIATE"):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version in _MIGRATIONS:
                for step in range(version, SCHEMA_VERSION):
                    for statement in _MIGRATIONS[step]:
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise SessionStoreError(
                    f"SQLite session store {self.path!r} has schema version {version}, but "
                    f"this version of asgi-server-sessions uses {SCHEMA_VERSION}. Upgrade "
                    "asgi-server-sessions, or point the store at a new file."
                )

    async def _call(
        self,
        db: aiosqlite.Connection,
        action: str,
        fn: Callable[[sqlite3.Connection], T],
        *,
        retried: int = 0,
    ) -> T:
        """Run ``fn`` on the connection's thread: one hop for a whole transaction."""
        try:
            # aiosqlite has no public "run this on the connection thread"; _execute is
            # what its own public methods use, and it saves ~0.1 ms per statement.
            result: T = await db._execute(fn, db._conn)  # type: ignore[no-untyped-call]
            return result
        except sqlite3.Error as exc:
            if not _is_busy(exc) or retried >= self._busy_retries:
                raise self._failure(action, exc) from exc
        except ValueError as exc:  # aiosqlite: "Connection closed" during aclose()
            raise self._failure(action, exc) from exc
        await asyncio.sleep(0.01 * (retried + 1))
        return await self._call(db, action, fn, retried=retried + 1)

    async def _run(self, action: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._call(self._db or await self._connection(), action, fn)

    # -- hooks ----------------------------------------------------------------------

    async def read(self, store_id: str) -> StoredSession | None:
        now = self.clock()

        def load(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(self._load, (now, store_id)).fetchall()

        # _call directly, not _run: one coroutine fewer on the two hottest paths.
        rows = await self._call(self._db or await self._connection(), "load a session", load)
        if not rows:
            return None
        created_at, updated_at, expires_at, expiry, owner, device = rows[0][:6]
        if expires_at <= now:
            read_found_expired(owner)
            return None
        return StoredSession(
            data={row[6]: row[7] for row in rows if row[6] is not None},
            expires_at=expires_at,
            created_at=created_at,
            updated_at=updated_at,
            expiry=expiry,
            owner=owner,
            device=device,
        )

    async def write(self, store_id: str, change: SessionWrite) -> WriteOutcome:
        def save(conn: sqlite3.Connection) -> WriteOutcome:
            with _transaction(conn, self._begin):
                return self._apply(conn, store_id, store_id, change)

        return await self._call(self._db or await self._connection(), "save a session", save)

    async def move(self, store_id: str, new_id: str, change: SessionWrite) -> WriteOutcome:
        def move(conn: sqlite3.Connection) -> WriteOutcome:
            with _transaction(conn, self._begin):
                if self._is_live(conn, new_id):
                    raise KeyCollision(f"A session with store id {new_id[:12]}... already exists.")
                conn.execute(_DROP_DATA, (new_id,))  # an expired record under the new id
                conn.execute(_DROP_SESSION, (new_id,))
                return self._apply(conn, store_id, new_id, change)

        return await self._run("rotate a session key", move)

    def _is_live(self, conn: sqlite3.Connection, store_id: str) -> bool:
        row = conn.execute("SELECT expires_at FROM sessions WHERE id = ?", (store_id,)).fetchone()
        return row is not None and row[0] > self.clock()

    def _apply(
        self, conn: sqlite3.Connection, store_id: str, new_id: str, change: SessionWrite
    ) -> WriteOutcome:
        """Merge ``change`` into ``store_id`` and leave the result under ``new_id``
        (inside the caller's transaction)."""
        now = self.clock()
        if change.create:
            if self._is_live(conn, store_id):
                raise KeyCollision(f"A session with store id {store_id[:12]}... already exists.")
            conn.execute(_DROP_DATA, (store_id,))  # an expired record under the same id
            expiry = change.expiry
            expires_at = resolve_expires_at(
                expiry, change.now, change.default_expires_at, change.expires_cap
            )
            conn.execute(_DROP_SESSION, (store_id,))
            conn.execute(
                _INSERT,
                (
                    new_id,
                    change.created_at,
                    change.now,
                    expires_at,
                    expiry,
                    change.owner,
                    change.device,
                    purge_after(expires_at),
                ),
            )
        else:
            renewed = False
            if new_id == store_id and not (change.owner_changed or change.expiry_changed):
                expiry = None
                expires_at = resolve_expires_at(
                    expiry, change.now, change.default_expires_at, change.expires_cap
                )
                values = (change.now, expires_at, store_id, now, purge_after(expires_at))
                renewed = conn.execute(_RENEW, values).rowcount == 1
            if not renewed:
                expires_at, expiry = self._merge_meta(conn, store_id, new_id, change, now)
        if change.replace:
            conn.execute(_DROP_DATA, (store_id,))
        elif change.deleted:
            conn.executemany(_DROP_KEY, [(store_id, key) for key in change.deleted])
        if new_id != store_id:
            conn.execute("UPDATE session_data SET sid = ? WHERE sid = ?", (new_id, store_id))
        puts = [(new_id, key, value) for key, value in change.set.items()]
        emptied = bool(change.replace or change.deleted)
        if change.merges:
            # Lists and counters: applied to what is stored now, inside this transaction
            # (BEGIN IMMEDIATE: no other writer between this read and the write), by the
            # reference function itself, so the text is byte-identical to the serializer's.
            for key, merge in change.merges.items():
                row = conn.execute(_GET_KEY, (new_id, key)).fetchone()
                value = merge_value(None if row is None else row[0], merge)
                if value is None:
                    if row is not None:
                        conn.execute(_DROP_KEY, (new_id, key))
                        emptied = True
                elif row is None or value != row[0]:
                    puts.append((new_id, key, value))
        if len(puts) == 1:
            conn.execute(_PUT, puts[0])
        elif puts:
            conn.executemany(_PUT, puts)
        elif emptied and conn.execute(_HAS_DATA, (new_id,)).fetchone() is None:
            # Emptiness is decided here, after the merge: only a record with no key left
            # goes (a concurrent request may have added one since this one loaded).
            conn.execute(_DROP_SESSION, (new_id,))
            return WriteOutcome(False, expires_at, expiry)
        return WriteOutcome(True, expires_at, expiry)

    def _merge_meta(
        self,
        conn: sqlite3.Connection,
        store_id: str,
        new_id: str,
        change: SessionWrite,
        now: float,
    ) -> tuple[float, str | None]:
        """Merge ``change``'s metadata into the live record (the general path); return its
        new end and expiry setting."""
        row = conn.execute(_LIVE_META, (store_id, now)).fetchone()
        if row is None:
            raise SessionInterrupted()
        owner, expiry = change.settings(row[2], row[1])
        expires_at = resolve_expires_at(
            expiry, change.now, change.default_expires_at, change.expires_cap
        )
        bucket = purge_after(expires_at)
        moved, rebucket = new_id != store_id, bucket != row[3]
        values: tuple[Any, ...] = (change.now, expires_at, expiry, owner)
        if change.owner_changed:
            values += (change.device,)
        if rebucket:
            values += (bucket,)
        if moved:
            values = (new_id, *values)  # renamed, the row keeps its device
        conn.execute(_UPDATE[moved, change.owner_changed, rebucket], (*values, store_id))
        return expires_at, expiry

    async def remove(self, store_id: str) -> None:
        def remove(conn: sqlite3.Connection) -> None:
            with _transaction(conn, "BEGIN IMMEDIATE"):
                conn.execute(_DROP_DATA, (store_id,))
                conn.execute(_DROP_SESSION, (store_id,))

        await self._run("delete a session", remove)

    async def purge_expired(self) -> int:
        removed = 0
        async for count in self.purge_expired_batches():
            removed += count
        return removed

    async def purge_expired_batches(self) -> AsyncGenerator[int, None]:
        now = self.clock()
        limit = self.purge_batch

        # Bounded batches, so no transaction holds the write lock (or the connection
        # thread) for long, and other requests get their turn between batches.
        def purge_batch(conn: sqlite3.Connection) -> int:
            with _transaction(conn, "BEGIN IMMEDIATE"):
                # purge_after <= expires_at: the index finds every expired record, and
                # reads past it only the live ones ending within the hour.
                ids = conn.execute(
                    "SELECT id FROM sessions WHERE purge_after <= ? AND expires_at <= ? "
                    "ORDER BY purge_after LIMIT ?",
                    (now, now, limit),
                ).fetchall()
                conn.executemany(_DROP_DATA, ids)
                conn.executemany(_DROP_SESSION, ids)
            return len(ids)

        while True:
            count = await self._run("delete expired sessions", purge_batch)
            yield count
            if count < limit:
                return

    async def stats(self) -> StoreStats:
        """Counts from the expiry and owner indexes; the size of the database files."""
        now = self.clock()

        def count(conn: sqlite3.Connection) -> StoreStats:
            live, expired = conn.execute(
                "SELECT COUNT(*) FILTER (WHERE expires_at > ?), "
                "COUNT(*) FILTER (WHERE expires_at <= ?) FROM sessions",
                (now, now),
            ).fetchone()
            # Import markers hold one key, IMPORT_MARKER_KEY: records, not sessions.
            (markers,) = conn.execute(
                "SELECT COUNT(*) FROM sessions AS s WHERE s.expires_at > ? "
                "AND EXISTS (SELECT 1 FROM session_data WHERE sid = s.id AND key = ?) "
                "AND (SELECT COUNT(*) FROM session_data WHERE sid = s.id) = 1",
                (now, IMPORT_MARKER_KEY),
            ).fetchone()
            live -= markers
            (owners,) = conn.execute(
                "SELECT COUNT(DISTINCT owner) FROM sessions "
                "WHERE owner IS NOT NULL AND expires_at > ?",
                (now,),
            ).fetchone()
            if self.path == ":memory:":
                (pages,) = conn.execute("PRAGMA page_count").fetchone()
                (page_size,) = conn.execute("PRAGMA page_size").fetchone()
                return StoreStats(live, expired, owners, pages * page_size, "memory", markers)
            # The -wal file holds commits not yet copied into the main file.
            files = (self.path, self.path + "-wal", self.path + "-shm")
            size = sum(os.path.getsize(name) for name in files if os.path.exists(name))
            return StoreStats(live, expired, owners, size, "disk", markers)

        return await self._run("count sessions", count)

    # -- owner index ----------------------------------------------------------------

    async def list_sessions(self, owner: str) -> list[OwnedSession]:
        now = self.clock()

        def owned(conn: sqlite3.Connection) -> list[Any]:
            return conn.execute(self._list, (owner, now)).fetchall()

        rows = await self._run("list an owner's sessions", owned)
        return [self.owned(*row) for row in rows]

    async def revoke(self, owner: str, public_id: str) -> int:
        return await self._end(owner, lambda sid: public_id_for(sid) == public_id)

    async def revoke_all(self, owner: str, *, keep: str | None = None) -> int:
        return await self._end(owner, lambda sid: keep is None or public_id_for(sid) != keep)

    async def _end(self, owner: str, chosen: Callable[[str], bool]) -> int:
        """End the owner's live sessions that ``chosen`` picks; return how many."""
        now = self.clock()

        def end(conn: sqlite3.Connection) -> int:
            with _transaction(conn, "BEGIN IMMEDIATE"):
                rows = conn.execute(
                    "SELECT id FROM sessions WHERE owner = ? AND expires_at > ?", (owner, now)
                ).fetchall()
                ids = [row for row in rows if chosen(row[0])]
                conn.executemany(_DROP_DATA, ids)
                conn.executemany(_DROP_SESSION, ids)
            return len(ids)

        return await self._run("revoke an owner's sessions", end)

    # -- lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        self._closed = True
        async with self._open_lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()


class _transaction:
    """``with _transaction(conn, "BEGIN IMMEDIATE"):`` commits, or rolls back on error."""

    def __init__(self, conn: sqlite3.Connection, begin: str) -> None:
        self.conn = conn
        self.begin = begin

    def __enter__(self) -> None:
        self.conn.execute(self.begin)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            if exc_type is None:
                self.conn.execute("COMMIT")
        finally:
            # Also after a failed COMMIT, so the connection is never left mid-transaction.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

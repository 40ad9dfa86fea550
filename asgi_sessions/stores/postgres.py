"""PostgresStore: sessions in the PostgreSQL database the app already runs (asyncpg).

Layout (``postgres_schema.sql``, chosen by measurement: ``bench/RESULTS.md``,
"PostgresStore layout"): a ``sessions`` row per session (a surrogate ``pk``, the SHA-256
of the key as ``id``) and a ``sessions_data`` row per top-level key, keyed ``(pk, key)``.
A save is one call of a PL/pgSQL function that locks the session row, merges the changed
keys and decides emptiness: one statement, one round trip, atomic.

The schema (``postgres_schema.sql``) is created on first use, in one transaction under an
advisory lock, and carries a version (``<table>_meta``); the README's PostgreSQL section
says how a future version upgrades it. Version 3 added ``device`` (the owner's device for
"your devices" pages, :mod:`asgi_sessions.devices`); an older schema is migrated in place
on first use, its records' devices unknown. The statements the store runs are in
``postgres_queries.sql``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ..errors import (
    ImproperlyConfigured,
    KeyCollision,
    MissingDependency,
    SessionInterrupted,
    SessionStoreError,
)
from ..events import read_found_expired
from ..redaction import redact_url
from .base import (
    IMPORT_MARKER_KEY,
    Clock,
    OwnedSession,
    SessionWrite,
    Store,
    StoredSession,
    StoreStats,
    WriteOutcome,
)
from .postgres_sql import SCHEMA_VERSION, SqlNames, set_up

if TYPE_CHECKING:
    from asyncpg import Record
    from asyncpg.pool import Pool

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

T = TypeVar("T")

# clear_expired() starts with batches of this many sessions, then adapts (see there).
_FIRST_PURGE_BATCH = 100
_MIN_PURGE_BATCH = 10
# PostgreSQL's text cannot hold U+0000: an owner with one is refused by the view
# (Session.owner), so no session has it, and an argument holding one matches nothing.
_NUL = "\x00"


def _import_asyncpg() -> Any:
    try:
        import asyncpg
    except ImportError as exc:
        raise MissingDependency("postgres", "asyncpg") from exc
    return asyncpg


class PostgresStore(Store):
    """Sessions in PostgreSQL, shared by every process and machine that reaches it.

    ``PostgresStore(dsn)`` (or :meth:`from_url`) opens its own asyncpg pool on first use
    and closes it in :meth:`aclose`; ``PostgresStore(pool=pool)`` uses a pool you own and
    leaves it open.

    Args:
        dsn: ``postgresql://user:password@host:port/database``.
        table: prefix of the store's tables and functions (``asgi_sessions``,
            ``asgi_sessions_data``, ...).
        schema: the schema they live in; ``None``: the first one on the search path.
        min_size, max_size: bounds of the pool the store opens.
        prepared_statements: ``False`` behind a pooler that cannot keep named prepared
            statements (PgBouncer < 1.21 in transaction mode, or ``max_prepared_statements
            = 0``); costs a second round trip per operation.
        command_timeout: seconds a statement may take before the request fails.
        connect_timeout: seconds to wait for a new connection.
        purge_batch: most expired sessions deleted per transaction by ``clear_expired()``
            (500: at 1,000, a batch beside busy writers held its locks up to 65 ms, over
            the 50 ms budget; at 500, 22 ms).
        purge_batch_seconds: how long one such transaction should take (and so hold its
            row locks); the batch size adapts to it.
        create_schema: create (or migrate) the tables on first use; with ``False`` the
            store only checks that they are there at its version.
        connect_options: passed to ``asyncpg.create_pool`` (``ssl=...``, ...).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: Pool[Record] | None = None,
        table: str = "asgi_sessions",
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        prepared_statements: bool = True,
        command_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        purge_batch: int = 500,
        purge_batch_seconds: float = 0.02,
        create_schema: bool = True,
        clock: Clock = time.time,
        **connect_options: Any,
    ) -> None:
        asyncpg = _import_asyncpg()
        super().__init__(clock=clock)
        if (dsn is None) == (pool is None):
            raise ImproperlyConfigured(
                "PostgresStore needs either a DSN (PostgresStore('postgresql://...')) or an "
                "asyncpg pool (PostgresStore(pool=pool)), not both."
            )
        if dsn is not None:
            try:
                parts = urlsplit(dsn)
                parts.port  # noqa: B018 - raises ValueError on a bad port or IPv6 bracket
            except ValueError as exc:
                raise ImproperlyConfigured(
                    f"Invalid PostgreSQL URL {redact_url(dsn)!r}: {exc}."
                ) from exc
            if parts.scheme.lower() not in ("postgresql", "postgres"):
                raise ImproperlyConfigured(
                    f"PostgresStore needs a postgresql:// URL, not {redact_url(dsn)!r}."
                )
        if min_size < 0 or max_size < max(1, min_size):
            raise ImproperlyConfigured(
                f"PostgresStore pool bounds min_size={min_size}, max_size={max_size} are "
                "impossible: use 0 <= min_size <= max_size and max_size >= 1."
            )
        self.dsn = dsn
        self.table = table
        self.schema = schema
        self.purge_batch = max(1, purge_batch)
        self.purge_batch_seconds = purge_batch_seconds
        self.create_schema = create_schema
        self._pool: Pool[Record] | None = pool
        self._owns_pool = pool is None
        self._pool_options: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "command_timeout": command_timeout,
            "timeout": connect_timeout,
            "statement_cache_size": 100 if prepared_statements else 0,
            # asyncpg's default reset (RESET ALL, UNLISTEN *, ...) is one more round trip
            # on every release, before the caller gets its result. The store's statements
            # leave no session state to reset (no SET, LISTEN, cursor or session lock).
            "reset": _keep_session_state,
            **connect_options,
        }
        self._ready = False
        self._closed = False
        self._open_lock = asyncio.Lock()
        self._errors: tuple[type[BaseException], ...] = (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            OSError,
            TimeoutError,
        )
        self._unique_violation: type[BaseException] = asyncpg.UniqueViolationError
        self._sql = SqlNames(table, schema)
        self._queries = self._sql.statements

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresStore:
        """A store with its own pool for ``url`` (``postgresql://`` or ``postgres://``)."""
        return cls(url, **options)

    def __repr__(self) -> str:
        where = redact_url(self.dsn) if self.dsn is not None else "pool=<asyncpg pool>"
        return f"{type(self).__name__}({where!r}, table={self.table!r})"

    # -- plumbing -------------------------------------------------------------------

    def _where(self) -> str:
        if self.dsn is None:
            return "(an application pool)"
        return redact_url(self.dsn)

    def _failure(self, action: str, exc: BaseException) -> SessionStoreError:
        detail = str(exc) or type(exc).__name__
        password = urlsplit(self.dsn).password if self.dsn is not None else None
        if password:  # belt and braces: asyncpg's messages do not quote it
            detail = detail.replace(password, "***")
        return SessionStoreError(
            f"PostgreSQL session store {self._where()} could not {action}: {detail}. Check "
            "that the server is running and reachable, and that the user may use the "
            f"{self.table!r} tables."
        )

    async def _get_pool(self) -> Pool[Record]:
        if self._ready and self._pool is not None:
            return self._pool
        async with self._open_lock:
            self._require_open()
            if self._pool is None:
                asyncpg = _import_asyncpg()
                created: Pool[Record] = await asyncpg.create_pool(self.dsn, **self._pool_options)
                self._pool = created
            if not self._ready:
                async with self._pool.acquire() as conn:
                    await set_up(conn, self._sql, create=self.create_schema, where=self._where())
                self._ready = True
        return self._pool

    async def _run(self, action: str, call: Callable[[Pool[Record]], Awaitable[T]]) -> T:
        try:
            pool = await self._get_pool()
            return await call(pool)
        except (SessionStoreError, SessionInterrupted, KeyCollision):
            raise
        except self._errors as exc:
            raise self._failure(action, exc) from exc

    # -- hooks ----------------------------------------------------------------------

    async def read(self, store_id: str) -> StoredSession | None:
        sid, now = _sid(store_id), self.clock()
        if sid is None:
            return None
        rows = await self._run(
            "load a session", lambda pool: pool.fetch(self._queries["load"], sid, now)
        )
        if not rows:
            return None
        created_at, updated_at, expires_at, expiry, owner = rows[0][:5]
        if expires_at <= now:  # one row without data (postgres_queries.sql, "load")
            read_found_expired(owner)
            return None
        return StoredSession(
            data={row[5]: row[6] for row in rows if row[5] is not None},
            expires_at=expires_at,
            created_at=created_at,
            updated_at=updated_at,
            expiry=expiry,
            owner=owner,
        )

    async def write(self, store_id: str, change: SessionWrite) -> WriteOutcome:
        return await self._apply(store_id, None, change, "save a session")

    async def move(self, store_id: str, new_id: str, change: SessionWrite) -> WriteOutcome:
        return await self._apply(store_id, new_id, change, "rotate a session key")

    async def _apply(
        self, store_id: str, new_id: str | None, change: SessionWrite, action: str
    ) -> WriteOutcome:
        sid, new_sid = _sid(store_id), None if new_id is None else _sid(new_id)
        if sid is None or (new_id is not None and new_sid is None):
            raise ValueError("Store ids are SHA-256 digests in hex (hash_key() of a key).")
        args = (
            sid, new_sid, change.create, change.replace,
            list(change.set), list(change.set.values()), list(change.deleted),
            self.clock(), change.now, change.default_expires_at, change.expires_cap,
            change.created_at, change.owner, change.owner_changed, change.device,
            change.expiry, change.expiry_changed,
            *_merge_args(change),
        )  # fmt: skip
        try:
            row = _row(
                await self._run(action, lambda pool: pool.fetchrow(self._queries["write"], *args))
            )
        except SessionStoreError as exc:
            # Only a race the function's own checks cannot see: two writers taking one
            # fresh id at the same instant.
            if isinstance(exc.__cause__, self._unique_violation):
                raise KeyCollision("A session with that store id already exists.") from exc
            raise
        status, expires_at, expiry = row
        if status == 2:
            raise SessionInterrupted()
        if status == 3:
            raise KeyCollision("A session with that store id already exists.")
        return WriteOutcome(status == 0, expires_at, expiry)

    async def remove(self, store_id: str) -> None:
        sid = _sid(store_id)
        if sid is None:
            return
        await self._run("delete a session", lambda pool: pool.execute(self._queries["remove"], sid))

    async def purge_expired(self) -> int:
        removed = 0
        async for count in self.purge_expired_batches():
            removed += count
        return removed

    async def purge_expired_batches(self) -> AsyncGenerator[int, None]:
        # Batches, each one statement and so one short transaction: no row stays locked
        # for long, and saves of live sessions interleave. The batch size adapts so that
        # a batch takes about purge_batch_seconds (the time it holds its locks), whatever
        # the server's speed and load, up to purge_batch sessions.
        now, size = self.clock(), min(_FIRST_PURGE_BATCH, self.purge_batch)
        cursor: tuple[float, int] = (float("-inf"), 0)  # (purge_after, pk) of the last deleted
        while True:
            row = _row(
                await self._run(
                    "delete expired sessions",
                    functools.partial(self._purge_batch, now=now, after=cursor, size=size),
                )
            )
            count: int = row[0]
            yield count
            if count < size:
                return
            cursor = (row[1], row[2])
            took: float = row[3]
            if took < self.purge_batch_seconds / 2:
                size = min(self.purge_batch, size * 2)
            elif took > self.purge_batch_seconds:
                size = max(min(_MIN_PURGE_BATCH, self.purge_batch), size // 2)

    async def _purge_batch(
        self, pool: Pool[Record], *, now: float, after: tuple[float, int], size: int
    ) -> Record | None:
        return await pool.fetchrow(self._queries["purge"], now, *after, size)

    async def stats(self) -> StoreStats:
        """Counts by one scan of both tables (import markers apart); their size on disk."""
        now = self.clock()
        row = _row(await self._run("count sessions", lambda pool: pool.fetchrow(
            self._queries["stats"], now, IMPORT_MARKER_KEY
        )))  # fmt: skip
        return StoreStats(row[0], row[1], row[2], row[3], "disk", row[4])

    # -- owner index ----------------------------------------------------------------

    async def list_sessions(self, owner: str) -> list[OwnedSession]:
        if _NUL in owner:
            return []  # no session has it (the view refuses it), and text cannot hold it
        now = self.clock()
        rows = await self._run(
            "list an owner's sessions",
            lambda pool: pool.fetch(self._queries["list"], owner, now),
        )
        return [self.owned(*row) for row in rows]

    async def revoke(self, owner: str, public_id: str) -> int:
        if _NUL in owner or _NUL in public_id:
            return 0
        now = self.clock()
        status: str = await self._run(
            "revoke a session",
            lambda pool: pool.execute(self._queries["revoke"], owner, now, public_id),
        )
        return int(status.rpartition(" ")[2])

    async def revoke_all(self, owner: str, *, keep: str | None = None) -> int:
        if _NUL in owner:
            return 0
        if keep is not None and _NUL in keep:
            keep = ""  # keeps no session, as a public id no session has does
        now = self.clock()
        status: str = await self._run(
            "revoke an owner's sessions",
            lambda pool: pool.execute(self._queries["revoke_all"], owner, now, keep),
        )
        return int(status.rpartition(" ")[2])

    # -- lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        async with self._open_lock:
            self._closed = True
            pool, self._pool = self._pool, None
            if pool is not None and self._owns_pool:
                await pool.close()


async def _keep_session_state(connection: object) -> None:
    """The pool's reset: nothing (asyncpg still rolls back a transaction left open)."""


def _sid(store_id: str) -> bytes | None:
    """The stored form of a store id (a SHA-256 in hex): its 32 bytes, or ``None`` if it is
    not one (no record can exist under it)."""
    try:
        return bytes.fromhex(store_id)
    except ValueError:
        return None


def _row(row: Record | None) -> Record:
    if row is None:  # pragma: no cover - the statements above always return one row
        raise SessionStoreError("PostgreSQL returned no row where one was expected.")
    return row


_NO_MERGES: tuple[list[str], list[str]] = ([], [])


def _merge_args(change: SessionWrite) -> tuple[list[str], list[str]]:
    """The write function's merge keys and ops (see postgres_schema.sql)."""
    if not change.merges:
        return _NO_MERGES
    ops: list[str] = []
    for merge in change.merges.values():
        if type(merge) is int:
            ops.append(str(merge))
        else:
            seen, appended = merge  # type: ignore[misc]
            ops.append("[[" + ",".join(seen) + "],[" + ",".join(appended) + "]]")
    return list(change.merges), ops

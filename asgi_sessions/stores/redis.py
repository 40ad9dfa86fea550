"""RedisStore: one Redis hash per session, native expiry, and an owner index.

Layout, under ``prefix`` (``"asgi_sessions:"`` by default):

- ``prefix + store_id``: a hash with one field per top-level session key (``d:<key>``)
  and the metadata beside them (``m:e`` expires at, ``m:c`` created, ``m:u`` updated,
  ``m:x`` expiry choice, ``m:o`` owner), so a user key can never shadow metadata. The
  hash expires natively (``PEXPIREAT``) when the session does: no cleanup job.
- ``prefix + "owner:" + owner``: a sorted set of the owner's store ids scored by their
  expiry, kept in step by the same scripts that write and delete sessions.

A load is one ``HGETALL``; a save and a delete are one Lua script each (``EVALSHA``), so
each is one round trip and atomic. The scripts reach the owner's set by a name built
from the stored owner, which a Redis Cluster cannot route: use a single Redis server
(or a replicated primary), as for most session stores.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..errors import (
    ImproperlyConfigured,
    KeyCollision,
    MissingDependency,
    SessionInterrupted,
    SessionStoreError,
)
from ..redaction import redact_url
from .base import (
    Clock,
    OwnedSession,
    SessionWrite,
    Store,
    StoredSession,
    WriteOutcome,
    public_id_for,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisStore"]

_DATA = "d:"
_EXPIRES, _CREATED, _UPDATED, _EXPIRY, _OWNER = "m:e", "m:c", "m:u", "m:x", "m:o"


def _script(name: str) -> str:
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text()


def _import_redis() -> Any:
    try:
        import redis.asyncio
        import redis.exceptions
    except ImportError as exc:
        raise MissingDependency("redis", "redis") from exc
    return redis


def _text(value: bytes | str) -> str:
    # The client may or may not have been built with decode_responses=True.
    return value.decode() if isinstance(value, bytes) else value


def _flag(value: str | None) -> str:
    return "-" if value is None else "+" + value


def _describe(client: Redis) -> str:
    pool = getattr(client, "connection_pool", None)
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"redis://{host}:{port}/{db}"


class RedisStore(Store):
    """Sessions in Redis, shared by every process and machine that reaches the server.

    ``RedisStore(client)`` uses a ``redis.asyncio.Redis`` you own and leaves it open;
    :meth:`from_url` builds a client that :meth:`aclose` closes.
    """

    def __init__(
        self, client: Redis, *, prefix: str = "asgi_sessions:", clock: Clock = time.time
    ) -> None:
        redis = _import_redis()
        super().__init__(clock=clock)
        if not prefix:
            raise ImproperlyConfigured("prefix must not be empty; use e.g. 'asgi_sessions:'.")
        self.client = client
        self.prefix = prefix
        self._owns_client = False
        # from_url() bounds concurrent commands to its pool's size, so a burst queues here
        # instead of failing with "Too many connections"; a client you pass in is yours.
        self._gate: asyncio.Semaphore | None = None
        self._pool_timeout = 5.0
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        self._where = _describe(client)
        self._write: AsyncScript = client.register_script(_script("write"))
        self._remove: AsyncScript = client.register_script(_script("remove"))
        self._list: AsyncScript = client.register_script(_script("list"))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "asgi_sessions:",
        clock: Clock = time.time,
        socket_timeout: float = 2.0,
        socket_connect_timeout: float = 2.0,
        max_connections: int = 64,
        pool_timeout: float = 5.0,
        **client_options: Any,
    ) -> RedisStore:
        """A store with its own client for ``url`` (``redis://host:port/db``), closed by aclose().

        Args:
            socket_timeout: seconds to wait for a reply before the request fails.
            socket_connect_timeout: seconds to wait for a connection.
            max_connections: connections this process opens at most; further requests
                wait for a free one (up to ``pool_timeout`` seconds) instead of failing.
            client_options: passed to the connection pool (``redis.asyncio`` options).
        """
        redis = _import_redis()
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # One immediate retry on a dropped connection (a pooled socket that died while the
        # server restarted), none on timeouts: an outage fails fast instead of backing off.
        client_options.setdefault(
            "retry", Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,))
        )
        client_options.setdefault("decode_responses", True)
        try:
            client = redis.asyncio.Redis.from_url(
                url,
                max_connections=max_connections,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                **client_options,
            )
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"Invalid Redis URL {redact_url(url)!r}: {redact_url(str(exc))}"
            ) from exc
        store = cls(client, prefix=prefix, clock=clock)
        store._owns_client = True
        # A semaphore rather than redis-py's BlockingConnectionPool: that pool pays an
        # asyncio.wait_for per command (measured +14 us on a ~100 us GET).
        store._gate = asyncio.Semaphore(max_connections)
        store._pool_timeout = pool_timeout
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r})"

    def _failure(self, doing: str, exc: BaseException) -> SessionStoreError:
        return SessionStoreError(
            f"Redis at {self._where} failed while {doing} ({type(exc).__name__}: {exc}). "
            "Check that the server is running and reachable from this process, and its "
            "timeouts and credentials."
        )

    async def _call(
        self, doing: str, command: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """Run one Redis command; a failure becomes a SessionStoreError saying what failed."""
        if self._closed:
            self._require_open()
        gate = self._gate
        if gate is not None:
            await self._acquire(gate, doing)
        try:
            return await command(*args, **kwargs)
        except self._errors as exc:
            raise self._failure(doing, exc) from exc
        finally:
            if gate is not None:
                gate.release()

    async def _acquire(self, gate: asyncio.Semaphore, doing: str) -> None:
        if not gate.locked():
            await gate.acquire()
            return
        # Every connection is busy: wait for one, but not forever.
        try:
            async with asyncio.timeout(self._pool_timeout):
                await gate.acquire()
        except TimeoutError as exc:
            raise self._failure(
                f"{doing} (no free connection within {self._pool_timeout} s)", exc
            ) from exc

    async def read(self, store_id: str) -> StoredSession | None:
        raw: dict[Any, Any] = await self._call(
            "loading a session", self.client.hgetall, self.prefix + store_id
        )
        if not raw:
            return None
        items: Iterable[tuple[Any, Any]] = raw.items()
        if isinstance(next(iter(raw)), bytes):
            # A client built without decode_responses=True (ours decode in the parser).
            items = [(name.decode(), value.decode()) for name, value in items]
        data: dict[str, str] = {}
        meta: dict[str, str] = {}
        for name, value in items:
            if name[:2] == _DATA:
                data[name[2:]] = value
            else:
                meta[name] = value
        expires = meta.get(_EXPIRES)
        # Redis expires the hash itself; the clock check makes an injected clock authoritative.
        if expires is None or float(expires) <= self.clock():
            return None
        return StoredSession(
            data=data,
            expires_at=float(expires),
            created_at=float(meta[_CREATED]),
            updated_at=float(meta[_UPDATED]),
            expiry=meta.get(_EXPIRY),
            owner=meta.get(_OWNER),
        )

    async def write(self, store_id: str, change: SessionWrite) -> WriteOutcome:
        return await self._save(store_id, store_id, change)

    async def move(self, store_id: str, new_id: str, change: SessionWrite) -> WriteOutcome:
        return await self._save(store_id, new_id, change)

    async def _save(self, store_id: str, new_id: str, change: SessionWrite) -> WriteOutcome:
        deleted = [_DATA + key for key in change.deleted if key not in change.set]
        cap = change.expires_cap
        args: list[str | int] = [
            self.prefix,
            store_id,
            new_id,
            repr(change.now),
            int(change.create),
            int(change.replace),
            int(change.owner_changed),
            _flag(change.owner),
            int(change.expiry_changed),
            _flag(change.expiry),
            repr(change.default_expires_at),
            "" if cap is None else repr(cap),
            repr(change.created_at),
            len(deleted),
            *deleted,
        ]
        for key, value in change.set.items():
            args += (_DATA + key, value)
        keys = [self.prefix + store_id, self.prefix + new_id]
        reply = await self._call("saving a session", self._write, keys=keys, args=args)
        if reply[0] == 1:
            raise KeyCollision(f"A session with store id {new_id[:12]}... already exists.")
        if reply[0] == 2:
            raise SessionInterrupted()
        expiry = _text(reply[3])
        return WriteOutcome(
            alive=reply[1] == 1,
            expires_at=float(_text(reply[2])),
            expiry=expiry[1:] if expiry else None,
        )

    async def remove(self, store_id: str) -> None:
        await self._remove_ids([store_id])

    async def _remove_ids(self, store_ids: Sequence[str]) -> int:
        if not store_ids:
            return 0
        keys = [self.prefix + store_id for store_id in store_ids]
        removed = await self._call("deleting sessions", self._remove, keys=keys, args=[self.prefix])
        return int(removed)

    async def purge_expired(self) -> int:
        # Redis deletes expired hashes itself; owner indexes are pruned as they are read.
        return 0

    async def _owned_live(self, owner: str) -> list[tuple[str, float, float, float]]:
        rows: list[Any] = await self._call(
            "listing an owner's sessions",
            self._list,
            keys=[self.prefix + "owner:" + owner],
            args=[self.prefix, owner, repr(self.clock())],
        )
        texts = [_text(item) for item in rows]
        return [
            (texts[i], float(texts[i + 1]), float(texts[i + 2]), float(texts[i + 3]))
            for i in range(0, len(texts), 4)
        ]

    async def list_sessions(self, owner: str) -> list[OwnedSession]:
        owned = sorted(await self._owned_live(owner), key=lambda row: (row[1], row[0]))
        return [self.owned(*row) for row in owned]

    async def revoke(self, owner: str, public_id: str) -> int:
        for store_id, *_ in await self._owned_live(owner):
            if public_id_for(store_id) == public_id:
                return await self._remove_ids([store_id])
        return 0

    async def revoke_all(self, owner: str, *, keep: str | None = None) -> int:
        ids = _except(await self._owned_live(owner), keep)
        return await self._remove_ids(ids)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self.client.aclose()


def _except(rows: Iterable[tuple[str, float, float, float]], keep: str | None) -> list[str]:
    return [row[0] for row in rows if keep is None or public_id_for(row[0]) != keep]

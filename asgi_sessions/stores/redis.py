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
from typing import TYPE_CHECKING, Any

from ..errors import (
    ImproperlyConfigured,
    KeyCollision,
    MissingDependency,
    SessionInterrupted,
    SessionStoreError,
)
from .base import Clock, OwnedSession, SessionWrite, Store, StoredSession, public_id_for

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisStore"]

_DATA = "d:"
_EXPIRES, _CREATED, _UPDATED, _EXPIRY, _OWNER = "m:e", "m:c", "m:u", "m:x", "m:o"
# KEYS[1] session hash. ARGV: prefix, store id, now, create, replace, expires_at,
# expires_at in ms, created_at, updated_at, expiry ("-" none, "+value"), owner (same),
# number of deleted keys, the deleted fields, then field/value pairs to set.
# Returns 0 on success, 1 if a create found a live record, 2 if an update found none.
_WRITE = """
local key = KEYS[1]
local prefix, sid, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local create, replace = ARGV[4] == '1', ARGV[5] == '1'
local cur = redis.call('HMGET', key, 'm:e', 'm:c', 'm:o')
local live = cur[1] and tonumber(cur[1]) > now
local created = ARGV[8]
if create then
  if live then return 1 end
  -- A record only our clock calls dead is replaced, not merged into.
  if cur[1] or cur[3] then redis.call('DEL', key) end
else
  if not live then return 2 end
  created = cur[2]
  if replace then redis.call('DEL', key) end
end
-- unpack() has a bounded stack: pass long argument lists in chunks.
local ndel = tonumber(ARGV[12])
local i = 13
while i < 13 + ndel do
  local last = math.min(i + 499, 12 + ndel)
  redis.call('HDEL', key, unpack(ARGV, i, last))
  i = last + 1
end
local meta = {'m:e', ARGV[6], 'm:c', created, 'm:u', ARGV[9]}
local unset = {}
if string.sub(ARGV[10], 1, 1) == '+' then
  table.insert(meta, 'm:x'); table.insert(meta, string.sub(ARGV[10], 2))
else
  table.insert(unset, 'm:x')
end
local owner = false
if string.sub(ARGV[11], 1, 1) == '+' then
  owner = string.sub(ARGV[11], 2)
  table.insert(meta, 'm:o'); table.insert(meta, owner)
else
  table.insert(unset, 'm:o')
end
if #unset > 0 then redis.call('HDEL', key, unpack(unset)) end
redis.call('HSET', key, unpack(meta))
while i <= #ARGV do
  local last = math.min(i + 999, #ARGV)
  redis.call('HSET', key, unpack(ARGV, i, last))
  i = last + 1
end
redis.call('PEXPIREAT', key, ARGV[7])
if cur[3] and cur[3] ~= owner then
  redis.call('ZREM', prefix .. 'owner:' .. cur[3], sid)
end
if owner then
  local okey = prefix .. 'owner:' .. owner
  redis.call('ZADD', okey, ARGV[6], sid)
  -- The index lives as long as the owner's longest-lived session.
  local top = redis.call('ZRANGE', okey, -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', okey, string.format('%d', math.ceil(tonumber(top[2]) * 1000)))
end
return 0
"""

# KEYS: session hashes. ARGV[1]: prefix. Deletes them and their owner-index entries;
# returns how many existed.
_REMOVE = """
local prefix = ARGV[1]
local n = 0
for _, key in ipairs(KEYS) do
  local owner = redis.call('HGET', key, 'm:o')
  if owner then
    redis.call('ZREM', prefix .. 'owner:' .. owner, string.sub(key, #prefix + 1))
  end
  n = n + redis.call('DEL', key)
end
return n
"""

# KEYS[1]: the owner's set. ARGV: prefix, owner, now. Returns store id, created, updated,
# expires for each live session, and drops members whose hash vanished (Redis expired
# it natively), expired, or now belongs to someone else.
_LIST = """
local okey, prefix, owner, now = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {}
for _, sid in ipairs(redis.call('ZRANGE', okey, 0, -1)) do
  local key = prefix .. sid
  local m = redis.call('HMGET', key, 'm:e', 'm:c', 'm:u', 'm:o')
  if m[1] and m[4] == owner and tonumber(m[1]) > now then
    table.insert(out, sid); table.insert(out, m[2])
    table.insert(out, m[3]); table.insert(out, m[1])
  else
    if m[1] and m[4] == owner then redis.call('DEL', key) end
    redis.call('ZREM', okey, sid)
  end
end
return out
"""


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
        self._closed = False
        # from_url() bounds concurrent commands to its pool's size, so a burst queues here
        # instead of failing with "Too many connections"; a client you pass in is yours.
        self._gate: asyncio.Semaphore | None = None
        self._pool_timeout = 5.0
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        self._where = _describe(client)
        self._write: AsyncScript = client.register_script(_WRITE)
        self._remove: AsyncScript = client.register_script(_REMOVE)
        self._list: AsyncScript = client.register_script(_LIST)

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
            raise ImproperlyConfigured(f"Invalid Redis URL {url!r}: {exc}") from exc
        store = cls(client, prefix=prefix, clock=clock)
        store._owns_client = True
        # A semaphore rather than redis-py's BlockingConnectionPool: that pool pays an
        # asyncio.wait_for per command (measured +14 us on a ~100 us GET).
        store._gate = asyncio.Semaphore(max_connections)
        store._pool_timeout = pool_timeout
        return store

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

    async def write(self, store_id: str, change: SessionWrite) -> None:
        deleted = [_DATA + key for key in change.deleted if key not in change.set]
        args: list[str | int] = [
            self.prefix,
            store_id,
            repr(self.clock()),
            int(change.create),
            int(change.replace),
            repr(change.expires_at),
            round(change.expires_at * 1000),
            repr(change.created_at),
            repr(change.updated_at),
            _flag(change.expiry),
            _flag(change.owner),
            len(deleted),
            *deleted,
        ]
        for key, value in change.set.items():
            args += (_DATA + key, value)
        outcome = await self._call(
            "saving a session", self._write, keys=[self.prefix + store_id], args=args
        )
        if outcome == 1:
            raise KeyCollision(f"A session with store id {store_id[:12]}... already exists.")
        if outcome == 2:
            raise SessionInterrupted()

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
        if self._owns_client and not self._closed:
            self._closed = True
            await self.client.aclose()


def _except(rows: Iterable[tuple[str, float, float, float]], keep: str | None) -> list[str]:
    return [row[0] for row in rows if keep is None or public_id_for(row[0]) != keep]

"""RedisStore: one Redis hash per session, native expiry, and an owner index.

Layout, under ``prefix`` (``"asgi_sessions:"`` by default):

- a hash per session with one field per top-level session key (``d:<key>``) and the
  metadata beside them (``m:e`` expires at, ``m:c`` created, ``m:u`` updated, ``m:x``
  expiry setting, ``m:o`` owner), so a user key can never shadow metadata. The hash
  expires natively (``PEXPIREAT``) when the session does: no cleanup job, no scan.
- a sorted set per owner of their sessions, scored by expiry, kept in step by the same
  scripts that write and delete sessions.

On one server (or the master that Sentinel names) the hash is ``prefix + sha256(key)``
and the index ``prefix + "owner:" + owner``. On a Redis Cluster each name also carries
a slot tag, so that a session and its owner's index share a slot and every script
stays in one slot: see :mod:`asgi_sessions.stores.redis_layout` for that design and why.

A load is one ``HGETALL``; a save and a delete are one Lua script each (``EVALSHA``), so
each is one round trip and atomic. With replicas (Cluster, Sentinel) a write is answered
only once the replicas hold it: :mod:`asgi_sessions.stores.redis_replicas`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
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
    Saved,
    SessionWrite,
    Store,
    StoredSession,
    WriteOutcome,
    public_id_for,
)
from .redis_layout import ClusterLayout, Layout, mint_key, owner_tag, random_tag, tag_of
from .redis_replicas import NotReplicated, ReplicatedWrites

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript

    from .redis_url import RedisClients

__all__ = ["RedisStore"]

logger = logging.getLogger("asgi_sessions")

_DATA = "d:"
_EXPIRES, _CREATED, _UPDATED, _EXPIRY, _OWNER, _MOVED = "m:e", "m:c", "m:u", "m:x", "m:o", "m:m"
_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")
_CREATE_ATTEMPTS = 5
# How long a process trusts its copy of the cluster's slot key before reading it again.
_SLOT_KEY_TTL = 60.0


def _script(name: str) -> str:
    return (resources.files(__package__) / "lua" / f"{name}.lua").read_text()


def _import_redis() -> Any:
    try:
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.exceptions
    except ImportError as exc:
        raise MissingDependency("redis", "redis") from exc
    return redis


def _text(value: bytes | str) -> str:
    # The client may or may not have been built with decode_responses=True.
    return value.decode() if isinstance(value, bytes) else value


def _flag(value: str | None) -> str:
    return "-" if value is None else "+" + value


def _describe(client: Any) -> str:
    """Where the client points, for error messages (never with a password)."""
    nodes = getattr(client, "startup_nodes", None)
    if nodes:
        return "Redis Cluster via " + ",".join(f"{node.host}:{node.port}" for node in nodes)
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service is not None:
        return f"the master Sentinel names for {service!r}"
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"redis://{host}:{port}/{db}"


def _replicated(client: Any, cluster: bool) -> bool:
    # Cluster masters and Sentinel-managed masters have replicas that a failover promotes.
    return cluster or hasattr(getattr(client, "connection_pool", None), "service_name")


class RedisStore(Store):
    """Sessions in Redis, shared by every process and machine that reaches the server.

    ``RedisStore(client)`` uses a ``redis.asyncio.Redis`` (also one from
    ``Sentinel.master_for()``) or a ``redis.asyncio.RedisCluster`` you own, and leaves it
    open; :meth:`from_url` builds a client that :meth:`aclose` closes.

    Args:
        wait_for_replicas: answer a write only once the master's online replicas hold it
            (``WAIT``), so a failover cannot lose it. Default: on for a cluster or a
            Sentinel-managed master, off otherwise.
        replica_timeout: seconds to wait for the replicas before the write fails.
    """

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        prefix: str = "asgi_sessions:",
        clock: Clock = time.time,
        wait_for_replicas: bool | None = None,
        replica_timeout: float = 0.5,
    ) -> None:
        redis = _import_redis()
        super().__init__(clock=clock)
        if not prefix:
            raise ImproperlyConfigured("prefix must not be empty; use e.g. 'asgi_sessions:'.")
        cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        self.layout = ClusterLayout(prefix) if cluster else Layout(prefix)
        self.new_key_on_owner_change = cluster
        self.client = client
        self.prefix = prefix
        self._owned_clients: RedisClients | None = None
        # from_url() bounds concurrent commands to its pool's size, so a burst queues here
        # instead of failing with "Too many connections"; a client you pass in is yours.
        self._gate: asyncio.Semaphore | None = None
        self._pool_timeout = 5.0
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
            NotReplicated,
        )
        self._no_script = redis.exceptions.NoScriptError
        self._where = _describe(client)
        if wait_for_replicas is None:
            wait_for_replicas = _replicated(client, cluster)
        self._replicas = (
            ReplicatedWrites(client, timeout=replica_timeout) if wait_for_replicas else None
        )
        self._write: AsyncScript = client.register_script(_script("write"))
        self._remove: AsyncScript = client.register_script(_script("remove"))
        self._list: AsyncScript = client.register_script(_script("list"))
        self._unseal: AsyncScript = client.register_script(_script("unseal"))
        self._read_slot_key: AsyncScript = client.register_script(_script("slot_key"))
        self._slot_key: bytes | None = None
        self._slot_key_read_at = 0.0

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
        wait_for_replicas: bool | None = None,
        replica_timeout: float = 0.5,
        **client_options: Any,
    ) -> RedisStore:
        """A store with its own client for ``url``, closed by aclose().

        ``url`` is ``redis://host:port/db`` (``rediss://`` for TLS),
        ``redis+cluster://host:port[,host:port...]`` (any seed nodes of a Redis
        Cluster), or ``redis+sentinel://host:port[,host:port...]/service[/db]`` (see
        :mod:`asgi_sessions.stores.redis_url`).

        Args:
            socket_timeout: seconds to wait for a reply before the request fails.
            socket_connect_timeout: seconds to wait for a connection.
            max_connections: connections this process opens at most (per node on a
                cluster); further requests wait for a free one (up to ``pool_timeout``
                seconds) instead of failing.
            client_options: passed to the connection pool (``redis.asyncio`` options).
        """
        redis = _import_redis()
        from .redis_url import connect, parse_redis_url

        if url.partition("://")[0].lower() in _CLUSTER_SCHEMES:
            clients = connect(
                parse_redis_url(url),
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                max_connections=max_connections,
                **client_options,
            )
        else:
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            from .redis_url import RedisClients

            # One immediate retry on a dropped connection (a pooled socket that died while
            # the server restarted), none on timeouts: an outage fails fast.
            client_options.setdefault(
                "retry",
                Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
            )
            client_options.setdefault("decode_responses", True)
            try:
                clients = RedisClients(
                    redis.asyncio.Redis.from_url(
                        url,
                        max_connections=max_connections,
                        socket_timeout=socket_timeout,
                        socket_connect_timeout=socket_connect_timeout,
                        **client_options,
                    )
                )
            except ValueError as exc:
                raise ImproperlyConfigured(
                    f"Invalid Redis URL {redact_url(url)!r}: {redact_url(str(exc))}"
                ) from exc
        store = cls(
            clients.client,
            prefix=prefix,
            clock=clock,
            wait_for_replicas=wait_for_replicas,
            replica_timeout=replica_timeout,
        )
        store._owned_clients = clients
        # A semaphore rather than redis-py's BlockingConnectionPool: that pool pays an
        # asyncio.wait_for per command (measured +14 us on a ~100 us GET).
        store._gate = asyncio.Semaphore(max_connections)
        store._pool_timeout = pool_timeout
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r})"

    # -- running commands --------------------------------------------------------------

    def _failure(self, doing: str, exc: BaseException) -> SessionStoreError:
        return SessionStoreError(
            f"Redis ({self._where}) failed while {doing} ({type(exc).__name__}: "
            f"{redact_url(str(exc))}). Check that the server is running and reachable "
            "from this process, and its timeouts and credentials."
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

    async def _run(self, doing: str, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a script that writes: through WAIT when the master has replicas to wait for."""
        if self._replicas is not None:
            return await self._call(doing, self._replicas.run, script, keys, args)
        return await self._call(doing, self._script, script, keys, args)

    async def _script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        if not self.layout.cluster:
            return await script(keys=keys, args=args)
        target = await self._node_of(keys[0])
        try:
            return await self.client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args, **target
            )
        except self._no_script:
            await self.client.script_load(script.script)  # on every master
            return await self.client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args, **target
            )

    async def _hgetall(self, name: str) -> dict[Any, Any]:
        client: Any = self.client
        if not self.layout.cluster:
            return await client.hgetall(name)  # type: ignore[no-any-return]
        return await client.execute_command("HGETALL", name, **await self._node_of(name))  # type: ignore[no-any-return]

    async def _node_of(self, name: str) -> dict[str, Any]:
        """Where a cluster command on ``name`` goes, decided here rather than by the client.

        redis-py picks a command's node before it makes sure it knows the slots, so the
        first commands of a fresh (or just reset) client can go to a random node; each
        MOVED answer then used to reset the client again, under every other request.
        """
        client: Any = self.client
        await client.initialize()
        return {"target_nodes": client.get_node_from_key(name)}

    # -- keys and slots ---------------------------------------------------------------

    async def _owner_tag(self, owner: str) -> str:
        """The slot tag of ``owner``'s sessions and index (a cluster only)."""
        slot_key = self._slot_key
        if slot_key is None or time.monotonic() - self._slot_key_read_at > _SLOT_KEY_TTL:
            # Propose what we know, so that a key lost to a FLUSHALL comes back unchanged.
            proposal = slot_key.decode() if slot_key else secrets.token_hex(32)
            value = await self._run(
                "reading the cluster's slot key",
                self._read_slot_key,
                [self.prefix + "slot-key"],
                [proposal],
            )
            slot_key = self._slot_key = _text(value).encode()
            self._slot_key_read_at = time.monotonic()
        return owner_tag(slot_key, owner)

    async def _new_key(self, owner: str | None) -> str:
        if not self.layout.cluster:
            return self.new_key(owner)
        return mint_key(random_tag() if owner is None else await self._owner_tag(owner))

    async def _target_tag(self, key: str, change: SessionWrite) -> str:
        """The tag a session must carry after ``change``: its owner's, once it has one."""
        if self.layout.cluster and change.owner_changed and change.owner is not None:
            return await self._owner_tag(change.owner)
        return tag_of(key)

    # -- what sessions call -------------------------------------------------------------

    async def read(self, store_id: str) -> StoredSession | None:
        """The live record named ``prefix + store_id`` (a cluster's ids carry a slot tag)."""
        raw = await self._call("loading a session", self._hgetall, self.prefix + store_id)
        return self._record(raw)

    async def load(self, session_key: str) -> StoredSession | None:
        return await self.read(self.layout.member(session_key))

    def _record(self, raw: dict[Any, Any]) -> StoredSession | None:
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
        # Redis expires the hash itself; the clock check makes an injected clock
        # authoritative. A sealed record has moved to another slot: gone for us.
        if expires is None or float(expires) <= self.clock() or _MOVED in meta:
            return None
        return StoredSession(
            data=data,
            expires_at=float(expires),
            created_at=float(meta[_CREATED]),
            updated_at=float(meta[_UPDATED]),
            expiry=meta.get(_EXPIRY),
            owner=meta.get(_OWNER),
        )

    async def create(self, change: SessionWrite) -> Saved:
        self._require_open()
        for attempt in range(_CREATE_ATTEMPTS):
            key = await self._new_key(change.owner)
            try:
                outcome = await self._merge(key, key, change)
            except KeyCollision:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                continue
            return Saved(key, outcome.alive, outcome.expires_at, outcome.expiry)
        raise AssertionError("unreachable")  # pragma: no cover

    async def save(self, session_key: str, change: SessionWrite) -> Saved:
        if self._closed:
            self._require_open()
        if change.owner_changed and self.layout.cluster:
            if await self._target_tag(session_key, change) != tag_of(session_key):
                if change.create:
                    raise ValueError(
                        "On a Redis Cluster a session's key carries its owner's slot tag, "
                        "so a caller cannot choose the key of an owned session: create it "
                        "with store.create(change), which mints one."
                    )
                # The new owner's index is in another slot: the session must move there,
                # under a new key, even with rotation switched off.
                return await self.rotate(session_key, change)
        outcome = await self._merge(session_key, session_key, change)
        return Saved(session_key, outcome.alive, outcome.expires_at, outcome.expiry)

    async def rotate(self, session_key: str, change: SessionWrite) -> Saved:
        self._require_open()
        tag = await self._target_tag(session_key, change)
        for attempt in range(_CREATE_ATTEMPTS):
            key = mint_key(tag) if self.layout.cluster else self.new_key(change.owner)
            try:
                if tag == tag_of(session_key) or not self.layout.cluster:
                    outcome = await self._merge(session_key, key, change)
                else:
                    outcome = await self._move_across_slots(session_key, key, change)
            except KeyCollision:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                continue
            return Saved(key, outcome.alive, outcome.expires_at, outcome.expiry)
        raise AssertionError("unreachable")  # pragma: no cover

    async def delete(self, session_key: str) -> None:
        self._require_open()
        await self._remove_members([self.layout.member(session_key)], tag_of(session_key))

    async def _merge(
        self, key: str, new_key: str, change: SessionWrite, *, seal: bool = False
    ) -> WriteOutcome:
        """write.lua: merge ``change`` into ``key``'s record (create it, move it to
        ``new_key`` in the same slot, or seal it for a move to another slot)."""
        reply = await self._merge_reply(key, new_key, change, seal=seal)
        if reply[0] == 3:
            raise AssertionError("a seal's reply reached _merge")  # pragma: no cover
        return _outcome(reply)

    async def _merge_reply(
        self, key: str, new_key: str, change: SessionWrite, *, seal: bool = False
    ) -> list[Any]:
        layout = self.layout
        deleted = [_DATA + name for name in change.deleted if name not in change.set]
        cap = change.expires_cap
        member, new_member = layout.member(key), layout.member(new_key)
        args: list[str | int] = [
            layout.index_prefix(tag_of(key)),
            member,
            new_member,
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
            int(seal),
            len(deleted),
            *deleted,
        ]
        for name, value in change.set.items():
            args += (_DATA + name, value)
        names = [self.prefix + member, self.prefix + (member if seal else new_member)]
        reply: list[Any] = await self._run("saving a session", self._write, names, args)
        if reply[0] == 1:
            raise KeyCollision(f"A session with id {new_member[:16]}... already exists.")
        if reply[0] == 2:
            raise SessionInterrupted()
        return reply

    async def _move_across_slots(
        self, key: str, new_key: str, change: SessionWrite
    ) -> WriteOutcome:
        """Rotation into another cluster slot: seal the merged record in its slot, then
        create it in the new one (redis_layout explains why this order)."""
        # The owner changes only in the new slot: if the move fails, the old record is
        # still its old owner's, in that owner's index.
        sealing = dataclasses.replace(change, owner_changed=False, owner=None)
        reply = await self._merge_reply(key, new_key, sealing, seal=True)
        if reply[0] != 3:
            return _outcome(reply)  # the merge emptied the session: deleted, nothing to move
        fields = dict(zip(reply[1][::2], reply[1][1::2], strict=True))
        fields = {_text(name): _text(value) for name, value in fields.items()}
        moved = SessionWrite(
            set={name[2:]: value for name, value in fields.items() if name[:2] == _DATA},
            deleted=frozenset(),
            replace=False,
            create=True,
            now=change.now,
            default_expires_at=change.default_expires_at,
            expires_cap=change.expires_cap,
            created_at=float(fields[_CREATED]),
            owner=change.owner,
            owner_changed=True,
            expiry=fields.get(_EXPIRY),
            expiry_changed=True,
        )
        try:
            return await self._merge(new_key, new_key, moved)
        except (SessionStoreError, KeyCollision):
            await self._unseal_after_failure(key, new_key)
            raise

    async def _unseal_after_failure(self, key: str, new_key: str) -> None:
        """Give the old record back its life, but only once the new one surely is not
        there (the create may have run even though its answer was lost)."""
        try:
            await self._remove_members([self.layout.member(new_key)], tag_of(new_key))
            await self._run(
                "restoring a session after a failed move",
                self._unseal,
                [self.layout.name(key)],
                [
                    self.layout.index_prefix(tag_of(key)),
                    self.layout.member(key),
                    self.layout.member(new_key),
                ],
            )
        except SessionStoreError as exc:
            # The old record stays sealed and expires: the user is signed out, never twice.
            logger.warning("A session could not be restored after a failed move: %s", exc)

    async def purge_expired(self) -> int:
        # Redis deletes expired hashes itself; owner indexes are pruned as they are read.
        return 0

    # -- log out everywhere -----------------------------------------------------------

    async def _remove_members(self, members: list[str], tag: str) -> int:
        if not members:
            return 0
        removed = await self._run(
            "deleting sessions",
            self._remove,
            [self.prefix + member for member in members],
            [self.prefix, self.layout.index_prefix(tag)],
        )
        return int(removed)

    async def _owned_live(self, owner: str) -> tuple[str, list[tuple[str, float, float, float]]]:
        """The owner's tag, and (member, created, updated, expires) of their live sessions."""
        tag = await self._owner_tag(owner) if self.layout.cluster else ""
        # Listing prunes the index, but need not wait for replicas: pruning is idempotent.
        rows: list[Any] = await self._call(
            "listing an owner's sessions",
            self._script,
            self._list,
            [self.layout.index_prefix(tag) + owner],
            [self.prefix, owner, repr(self.clock())],
        )
        texts = [_text(item) for item in rows]
        return tag, [
            (texts[i], float(texts[i + 1]), float(texts[i + 2]), float(texts[i + 3]))
            for i in range(0, len(texts), 4)
        ]

    async def list_sessions(self, owner: str) -> list[OwnedSession]:
        _, rows = await self._owned_live(owner)
        owned = sorted(rows, key=lambda row: (row[1], row[0]))
        return [self.owned(self.layout.store_id(member), *times) for member, *times in owned]

    async def revoke(self, owner: str, public_id: str) -> int:
        tag, rows = await self._owned_live(owner)
        for member, *_ in rows:
            if public_id_for(self.layout.store_id(member)) == public_id:
                return await self._remove_members([member], tag)
        return 0

    async def revoke_all(self, owner: str, *, keep: str | None = None) -> int:
        tag, rows = await self._owned_live(owner)
        members = [
            member
            for member, *_ in rows
            if keep is None or public_id_for(self.layout.store_id(member)) != keep
        ]
        return await self._remove_members(members, tag)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owned_clients is not None:
            await self._owned_clients.aclose()


def _outcome(reply: list[Any]) -> WriteOutcome:
    expiry = _text(reply[3])
    return WriteOutcome(
        alive=reply[1] == 1,
        expires_at=float(_text(reply[2])),
        expiry=expiry[1:] if expiry else None,
    )

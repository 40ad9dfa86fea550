"""RedisStore: one Redis hash per session, native expiry, and an owner index.

Layout, under ``prefix`` (``"asgi_sessions:"`` by default):

- a hash per session with one field per top-level session key (``d:<key>``) and the
  metadata beside them (``m:e`` expires at, ``m:c`` created, ``m:u`` updated, ``m:x``
  expiry setting, ``m:o`` owner, ``m:d`` the owner's device, written with the owner and
  absent from older records), so a user key can never shadow metadata. The hash
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

import dataclasses
import logging
import math
import secrets
import time
from typing import TYPE_CHECKING, Any

from ..errors import (
    ImproperlyConfigured,
    KeyCollision,
    SessionInterrupted,
    SessionStoreError,
)
from .base import (
    Clock,
    OwnedSession,
    Saved,
    SessionWrite,
    Store,
    StoredSession,
    StoreStats,
    WriteOutcome,
    attempting,
    merged_data,
    public_id_for,
)
from .redis_io import Gate, RedisCommands, import_redis
from .redis_layout import (
    CREATED,
    DATA,
    DEVICE,
    EXPIRY,
    OWNER,
    ClusterLayout,
    Layout,
    decode_record,
    mint_key,
    owner_tag,
    random_tag,
    tag_of,
)
from .redis_stats import measure
from .redis_url import open_url

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster


__all__ = ["RedisStore"]

logger = logging.getLogger("asgi_sessions")

_CREATE_ATTEMPTS = 5
# How long a process trusts its copy of the cluster's slot key before reading it again.
_SLOT_KEY_TTL = 60.0
# A save of at most this many keys, with nothing else to do, takes update.lua.
_SHORT_PATH_KEYS = 200


def _text(value: bytes | str) -> str:
    # The client may or may not have been built with decode_responses=True.
    return value.decode() if isinstance(value, bytes) else value


def _flag(value: str | None) -> str:
    return "-" if value is None else "+" + value


class RedisStore(RedisCommands, Store):
    """Sessions in Redis, shared by every process and machine that reaches the server.

    ``RedisStore(client)`` uses a ``redis.asyncio.Redis`` (also one from
    ``Sentinel.master_for()``) or a ``redis.asyncio.RedisCluster`` you own, and leaves it
    open; :meth:`from_url` builds a client that :meth:`aclose` closes.

    Args:
        wait_for_replicas: answer a write only once a replica of its master holds it
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
        Store.__init__(self, clock=clock)
        if not prefix:
            raise ImproperlyConfigured("prefix must not be empty; use e.g. 'asgi_sessions:'.")
        RedisCommands.__init__(
            self, client, wait_for_replicas=wait_for_replicas, replica_timeout=replica_timeout
        )
        self.layout = ClusterLayout(prefix) if self.cluster else Layout(prefix)
        self.new_key_on_owner_change = self.cluster
        self.prefix = prefix
        self._write = self.register("write")
        self._update = self.register("update")
        self._remove = self.register("remove")
        self._list = self.register("list")
        self._unseal = self.register("unseal")
        self._read_slot_key = self.register("slot_key")
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
        import_redis()  # without redis: the ImportError that says how to install it
        clients = open_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            max_connections=max_connections,
            **client_options,
        )
        store = cls(
            clients.client,
            prefix=prefix,
            clock=clock,
            wait_for_replicas=wait_for_replicas,
            replica_timeout=replica_timeout,
        )
        store._owned_clients = clients
        # A gate rather than redis-py's BlockingConnectionPool: that pool pays an
        # asyncio.wait_for per command (measured +14 us on a ~100 us GET).
        store._gate = Gate(max_connections)
        store._pool_timeout = pool_timeout
        return store

    def __repr__(self) -> str:
        return f"RedisStore({self._where!r})"

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
        return decode_record(raw, self.clock())

    async def load(self, session_key: str) -> StoredSession | None:
        # read(), inlined: this is the one call on every request that touches a session.
        name = self.prefix + self.layout.member(session_key)
        raw = await self._call("loading a session", self._hgetall, name)
        return decode_record(raw, self.clock())

    async def create(self, change: SessionWrite) -> Saved:
        self._require_open()
        for attempt in range(_CREATE_ATTEMPTS):
            key = await self._new_key(change.owner)
            try:
                with attempting(key):
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
        if (
            not (change.create or change.replace or change.merges)
            and not (change.owner_changed or change.expiry_changed)
            and 0 < len(change.set) <= _SHORT_PATH_KEYS
            # A key deleted and then set again is simply set.
            and (not change.deleted or change.deleted <= change.set.keys())
        ):
            return await self._update_keys(session_key, change)
        reply = await self._merge_reply(session_key, session_key, change)
        return Saved(session_key, reply[1] == 1, float(_text(reply[2])), _expiry(reply[3]))

    async def _update_keys(self, key: str, change: SessionWrite) -> Saved:
        """update.lua: the usual save (keys set, nothing else), in 70 % of write.lua's
        server time, answered with a single number (bench/RESULTS.md)."""
        cap = change.expires_cap
        ends = change.default_expires_at
        if cap is not None and cap < ends:
            ends = cap
        layout = self.layout
        member = layout.member(key)
        args: list[str | int] = [
            layout.index_prefix(tag_of(key)),
            member,
            repr(change.now),
            repr(ends),
            math.ceil(ends * 1000),
            "" if cap is None else repr(cap),
        ]
        for name, value in change.set.items():
            args += (DATA + name, value)
        reply = await self._run("saving a session", self._update, [self.prefix + member], args)
        if reply == 1:
            return Saved(key, True, ends, None)
        if reply == 0:
            raise SessionInterrupted()
        return Saved(key, True, float(_text(reply[0])), _text(reply[1]))

    async def rotate(self, session_key: str, change: SessionWrite) -> Saved:
        self._require_open()
        tag = await self._target_tag(session_key, change)
        for attempt in range(_CREATE_ATTEMPTS):
            key = mint_key(tag) if self.layout.cluster else self.new_key(change.owner)
            try:
                with attempting(key):
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
        deleted = [DATA + name for name in change.deleted if name not in change.set]
        cap = change.expires_cap
        default_ends = change.default_expires_at
        if cap is not None and cap < default_ends:
            default_ends = cap
        member = layout.member(key)
        new_member = member if new_key is key else layout.member(new_key)
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
            repr(default_ends),
            "" if cap is None else repr(cap),
            repr(change.created_at),
            int(seal),
            math.ceil(default_ends * 1000),
            # Read only with the owner (on a create or an owner change): else kept as stored.
            _flag(change.device) if change.create or change.owner_changed else "-",
            len(deleted),
            *deleted,
            *_merge_args(change),
        ]
        for name, value in change.set.items():
            args += (DATA + name, value)
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
        # The seal freezes the record as stored: this request's changes (its data, owner
        # and expiry) are merged only into the new slot's copy. If the move fails, the old
        # record comes back exactly as it was, in its old owner's index: a login's data
        # (``user = alice``) never lands under the old key, which may be a planted one.
        sealing = dataclasses.replace(
            change,
            set={},
            deleted=frozenset(),
            replace=False,
            owner_changed=False,
            owner=None,
            expiry_changed=False,
            merges={},
            device=None,
        )
        try:
            reply = await self._merge_reply(key, new_key, sealing, seal=True)
        except SessionStoreError:
            # The seal may have applied with its reply lost: unseal (a no-op if it did not),
            # or the user would hold no working key until the seal expires.
            await self._unseal_after_failure(key, new_key)
            raise
        if reply[0] != 3:  # pragma: no cover - a seal that changes nothing never empties
            return _outcome(reply)
        fields = dict(zip(reply[1][::2], reply[1][1::2], strict=True))
        fields = {_text(name): _text(value) for name, value in fields.items()}
        stored = {name[2:]: value for name, value in fields.items() if name[:2] == DATA}
        data = merged_data(stored, change)
        if not data:
            # The request emptied the session: it ends here, nothing moves (the emptiness
            # rule; the sealed record is frozen, so no concurrent write can refill it).
            await self._remove_members([self.layout.member(key)], tag_of(key))
            return WriteOutcome(False, change.now, None)
        # What the request changed, else what the sealed record (this session's) holds.
        owner, expiry = change.settings(fields.get(OWNER), fields.get(EXPIRY))
        moved = SessionWrite(
            set=data,
            deleted=frozenset(),
            replace=False,
            create=True,
            now=change.now,
            default_expires_at=change.default_expires_at,
            expires_cap=change.expires_cap,
            created_at=float(fields[CREATED]),
            owner=owner,
            owner_changed=True,
            expiry=expiry,
            expiry_changed=True,
            device=change.device_after(fields.get(DEVICE)),
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

    async def _owned_live(
        self, owner: str
    ) -> tuple[str, list[tuple[str, float, float, float, str | None]]]:
        """The owner's tag, and (member, created, updated, expires, device) of their live
        sessions (device ``None`` for a record written before devices were kept)."""
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
            (
                texts[i],
                float(texts[i + 1]),
                float(texts[i + 2]),
                float(texts[i + 3]),
                texts[i + 4] or None,
            )
            for i in range(0, len(texts), 5)
        ]

    async def list_sessions(self, owner: str) -> list[OwnedSession]:
        _, rows = await self._owned_live(owner)
        owned = sorted(rows, key=lambda row: (row[1], row[0]))
        return [
            self.owned(self.layout.store_id(member), created, updated, expires, device)
            for member, created, updated, expires, device in owned
        ]

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

    async def stats(self) -> StoreStats:
        """Counts and bytes (``MEMORY USAGE``) of every key under the prefix.

        It SCANs the keyspace (every master of a cluster), a page at a time: for operators,
        never for requests. Redis deletes expired sessions itself, so ``expired`` counts
        only those our clock calls dead that Redis has not dropped yet (usually none).
        Import markers are counted in ``markers``, not in ``sessions``.
        """
        return await measure(self.client, self.layout, self.clock(), self._call)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._owned_clients is not None:
            await self._owned_clients.aclose()


def _merge_args(change: SessionWrite) -> list[str | int]:
    """write.lua's merge arguments: their count, then each merge (see write.lua)."""
    if not change.merges:
        return [0]
    args: list[str | int] = []
    for name, merge in change.merges.items():
        if type(merge) is int:
            args += (DATA + name, "i", str(merge))
        else:
            seen, appended = merge  # type: ignore[misc]
            args += (DATA + name, "l", len(seen), len(appended), *seen, *appended)
    return [len(args), *args]


def _outcome(reply: list[Any]) -> WriteOutcome:
    return WriteOutcome(reply[1] == 1, float(_text(reply[2])), _expiry(reply[3]))


def _expiry(reported: bytes | str) -> str | None:
    text = _text(reported)
    return text[1:] if text else None

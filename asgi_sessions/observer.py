"""A request's side of lifecycle events: what its session's store calls did, told to the
app's handlers (:mod:`asgi_sessions.events`) once each call returned.

Apart from :mod:`~asgi_sessions.events` because it loads through a store and names
sessions by their public id (:mod:`asgi_sessions.stores.base`), while the stores fire
events of their own (``revoked``, a batch ``expired``): events sit below the stores,
this module above them.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from .devices import decode_device
from .events import EventType, SessionEvent, SessionEvents, expired_reads, store_kind
from .stores.base import Store, StoredSession, hash_key, public_id_for

__all__ = ["Observer"]


class Observer:
    """One request's link to the handlers: the scope, and the owner before a change."""

    __slots__ = ("events", "owner_before", "scope")

    def __init__(self, events: SessionEvents, scope: MutableMapping[str, Any] | None) -> None:
        self.events = events
        self.scope = scope
        self.owner_before: str | None = None
        """The owner when the request first changed it since its last write."""

    async def load(self, store: Store, key: str) -> StoredSession | None:
        """``store.load(key)``, firing ``expired`` if the store saw the record expired."""
        with expired_reads() as found:
            record = await store.load(key)
        if record is None and found:
            await self.fire(store, "expired", _public_id(store, key), found[-1])
        return record

    async def wrote(
        self,
        store: Store,
        old_key: str | None,
        new_key: str,
        alive: bool,
        owner: str | None,
        owner_changed: bool,
        device: str | None = None,
    ) -> None:
        """A write of the session returned: created, rotated, owner changed."""
        if not alive:
            return  # the merge left nothing, so the store deleted the record
        if old_key is not None and new_key == old_key and not owner_changed:
            return  # a plain merge: nothing to tell (and no id worth hashing)
        public_id = _public_id(store, new_key)
        user_agent, ip = decode_device(device)
        if old_key is None:
            await self.fire(store, "created", public_id, owner, user_agent=user_agent, ip=ip)
        elif new_key != old_key and public_id is not None:
            # (Not on the cookie store: each of its writes is a new value, and the old
            # one stays valid until it expires, so nothing moved.)
            previous = _public_id(store, old_key)
            await self.fire(store, "rotated", public_id, owner, previous_public_id=previous)
        if owner_changed and owner != self.owner_before:
            await self.fire(
                store,
                "owner_changed",
                public_id,
                owner,
                previous_owner=self.owner_before,
                user_agent=user_agent,
                ip=ip,
            )

    async def ended(
        self, store: Store, kind: EventType, key: str | None, owner: str | None
    ) -> None:
        """The session the request held ended (``flushed``, ``expired``)."""
        if key is not None:
            await self.fire(store, kind, _public_id(store, key), owner)

    async def fire(
        self,
        store: Store,
        kind: EventType,
        public_id: str | None,
        owner: str | None,
        **extra: Any,
    ) -> None:
        await self.events.emit(
            SessionEvent(
                kind, public_id, owner, store_kind(store), store.clock(), self.scope, **extra
            )
        )


def _public_id(store: Store, key: str) -> str | None:
    if store.keeps_data_in_cookie:
        return None
    return public_id_for(hash_key(key))

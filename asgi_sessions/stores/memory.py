"""MemoryStore: sessions in a dict, for tests and single-process development."""

from __future__ import annotations

import time

from ..errors import ImproperlyConfigured, KeyCollision, SessionInterrupted
from ..expiry import resolve_expires_at
from .base import (
    Clock,
    OwnedSession,
    SessionWrite,
    Store,
    StoredSession,
    WriteOutcome,
    merged_data,
    public_id_for,
)

__all__ = ["MemoryStore"]


class MemoryStore(Store):
    """Keeps sessions in this process's memory; bounded, oldest written evicted first.

    Every hook runs without awaiting, so each one is atomic with respect to other tasks:
    no lock is needed for concurrent requests. Data is lost when the process exits, and
    other worker processes do not see it.
    """

    def __init__(self, *, max_entries: int = 10_000, clock: Clock = time.time) -> None:
        super().__init__(clock=clock)
        if max_entries < 1:
            raise ImproperlyConfigured(f"max_entries must be at least 1, not {max_entries!r}.")
        self.max_entries = max_entries
        # Insertion order is write order: the first entry is the least recently written.
        self._records: dict[str, StoredSession] = {}
        self._by_owner: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(max_entries={self.max_entries!r})"

    def __len__(self) -> int:
        return len(self._records)

    def _live(self, store_id: str) -> StoredSession | None:
        record = self._records.get(store_id)
        if record is not None and record.expires_at <= self.clock():
            self._drop(store_id)
            return None
        return record

    def _drop(self, store_id: str) -> None:
        record = self._records.pop(store_id, None)
        if record is not None and record.owner is not None:
            owned = self._by_owner.get(record.owner)
            if owned is not None:
                owned.discard(store_id)
                if not owned:
                    del self._by_owner[record.owner]

    def _put(self, store_id: str, record: StoredSession) -> None:
        self._drop(store_id)
        self._records[store_id] = record
        if record.owner is not None:
            self._by_owner.setdefault(record.owner, set()).add(store_id)
        while len(self._records) > self.max_entries:
            self._drop(next(iter(self._records)))

    def _merge(self, store_id: str, change: SessionWrite) -> StoredSession | None:
        """The record ``change`` leaves (``None``: no data left); raises if it cannot apply."""
        current = self._live(store_id)
        if change.create:
            if current is not None:
                raise KeyCollision(f"A session with store id {store_id[:12]}... already exists.")
            owner, expiry, created_at, data = change.owner, change.expiry, change.created_at, {}
        else:
            if current is None:
                raise SessionInterrupted()
            owner, expiry = change.settings(current.owner, current.expiry)
            created_at, data = current.created_at, current.data
        data = merged_data(data, change)
        if not data:
            return None
        return StoredSession(
            data=data,
            expires_at=resolve_expires_at(
                expiry, change.now, change.default_expires_at, change.expires_cap
            ),
            created_at=created_at,
            updated_at=change.now,
            expiry=expiry,
            owner=owner,
        )

    async def read(self, store_id: str) -> StoredSession | None:
        # The stored record itself, not a copy: readers only decode from it, and write()
        # replaces records rather than changing one in place.
        if self._closed:
            self._require_open()
        return self._live(store_id)

    async def write(self, store_id: str, change: SessionWrite) -> WriteOutcome:
        record = self._merge(store_id, change)
        return self._commit(store_id, record, change)

    async def move(self, store_id: str, new_id: str, change: SessionWrite) -> WriteOutcome:
        record = self._merge(store_id, change)
        if self._live(new_id) is not None:
            raise KeyCollision(f"A session with store id {new_id[:12]}... already exists.")
        self._drop(store_id)
        return self._commit(new_id, record, change)

    def _commit(
        self, store_id: str, record: StoredSession | None, change: SessionWrite
    ) -> WriteOutcome:
        if record is None:
            self._drop(store_id)
            return WriteOutcome(False, change.now, None)
        self._put(store_id, record)
        return WriteOutcome(True, record.expires_at, record.expiry)

    async def remove(self, store_id: str) -> None:
        self._drop(store_id)

    async def purge_expired(self) -> int:
        now = self.clock()
        expired = [sid for sid, record in self._records.items() if record.expires_at <= now]
        for store_id in expired:
            self._drop(store_id)
        return len(expired)

    def _owned_live(self, owner: str) -> list[tuple[str, StoredSession]]:
        self._require_open()
        live = []
        for store_id in sorted(self._by_owner.get(owner, ())):
            record = self._live(store_id)
            if record is not None:
                live.append((store_id, record))
        return live

    async def list_sessions(self, owner: str) -> list[OwnedSession]:
        owned = self._owned_live(owner)
        owned.sort(key=lambda item: (item[1].created_at, item[0]))
        return [
            self.owned(sid, rec.created_at, rec.updated_at, rec.expires_at) for sid, rec in owned
        ]

    async def revoke(self, owner: str, public_id: str) -> int:
        for store_id, _ in self._owned_live(owner):
            if public_id_for(store_id) == public_id:
                self._drop(store_id)
                return 1
        return 0

    async def revoke_all(self, owner: str, *, keep: str | None = None) -> int:
        ended = 0
        for store_id, _ in self._owned_live(owner):
            if keep is not None and public_id_for(store_id) == keep:
                continue
            self._drop(store_id)
            ended += 1
        return ended

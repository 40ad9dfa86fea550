"""MemoryStore: sessions in a dict, for tests and single-process development."""

from __future__ import annotations

import sys
import time

from ..errors import ImproperlyConfigured, KeyCollision, SessionInterrupted
from ..events import read_found_expired
from ..expiry import resolve_expires_at
from .base import (
    Clock,
    OwnedSession,
    SessionWrite,
    Store,
    StoredSession,
    StoreStats,
    WriteOutcome,
    is_import_marker,
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

    def _index(self, store_id: str, old: str | None, new: str | None) -> None:
        if old == new:
            return
        if old is not None:
            owned = self._by_owner.get(old)
            if owned is not None:
                owned.discard(store_id)
                if not owned:
                    del self._by_owner[old]
        if new is not None:
            self._by_owner.setdefault(new, set()).add(store_id)

    def _merge(
        self, store_id: str, change: SessionWrite
    ) -> tuple[StoredSession | None, StoredSession | None]:
        """``(the record now stored, the record change leaves)``, the latter ``None`` when
        no data is left; raises if the change cannot apply."""
        current = self._records.get(store_id)
        if current is not None and current.expires_at <= self.clock():
            self._drop(store_id)
            current = None
        if change.create:
            if current is not None:
                raise KeyCollision(f"A session with store id {store_id[:12]}... already exists.")
            owner, expiry, created_at = change.owner, change.expiry, change.created_at
            device = change.device
            data = dict(change.set)
        else:
            if current is None:
                raise SessionInterrupted()
            if change.owner_changed:
                owner, device = change.owner, change.device
            else:
                owner, device = current.owner, current.device
            expiry = change.expiry if change.expiry_changed else current.expiry
            created_at = current.created_at
            if change.replace or change.deleted or change.merges:
                data = merged_data(current.data, change)
            else:  # the commonest save: keys set, nothing else (merged_data's first steps)
                data = dict(current.data)
                data.update(change.set)
        if not data:
            return current, None
        if expiry is None and change.expires_cap is None:
            ends = change.default_expires_at  # resolve_expires_at's answer, without a call
        else:
            ends = resolve_expires_at(
                expiry, change.now, change.default_expires_at, change.expires_cap
            )
        return current, StoredSession(data, ends, created_at, change.now, expiry, owner, device)

    async def read(self, store_id: str) -> StoredSession | None:
        # The stored record itself, not a copy: readers only decode from it, and writes
        # replace records rather than changing one in place.
        if self._closed:
            self._require_open()
        record = self._records.get(store_id)
        if record is not None and record.expires_at <= self.clock():
            self._drop(store_id)
            read_found_expired(record.owner)  # once: the record is gone from now on
            return None
        return record

    async def write(self, store_id: str, change: SessionWrite) -> WriteOutcome:
        record = self._apply(store_id, change)
        if record is None:
            return WriteOutcome(False, change.now, None)
        return WriteOutcome(True, record.expires_at, record.expiry)

    def _apply(self, store_id: str, change: SessionWrite) -> StoredSession | None:
        """Merge ``change`` and store the result; the record stored, ``None`` if deleted."""
        current, record = self._merge(store_id, change)
        return self._commit(store_id, current, record)

    async def move(self, store_id: str, new_id: str, change: SessionWrite) -> WriteOutcome:
        _, record = self._merge(store_id, change)
        if self._live(new_id) is not None:
            raise KeyCollision(f"A session with store id {new_id[:12]}... already exists.")
        self._drop(store_id)
        if self._commit(new_id, None, record) is None:
            return WriteOutcome(False, change.now, None)
        return WriteOutcome(True, record.expires_at, record.expiry)  # type: ignore[union-attr]

    def _commit(
        self, store_id: str, current: StoredSession | None, record: StoredSession | None
    ) -> StoredSession | None:
        records = self._records
        if record is None:
            self._drop(store_id)
            return None
        if current is not None:
            del records[store_id]  # re-inserted last: the most recently written
            if current.owner != record.owner:
                self._index(store_id, current.owner, record.owner)
        elif record.owner is not None:
            self._index(store_id, None, record.owner)
        records[store_id] = record
        if len(records) > self.max_entries:
            while len(records) > self.max_entries:
                self._drop(next(iter(records)))
        return record

    async def remove(self, store_id: str) -> None:
        self._drop(store_id)

    async def purge_expired(self) -> int:
        now = self.clock()
        expired = [sid for sid, record in self._records.items() if record.expires_at <= now]
        for store_id in expired:
            self._drop(store_id)
        return len(expired)

    async def stats(self) -> StoreStats:
        """Counts, and the approximate bytes of the Python objects holding the records."""
        self._require_open()
        now = self.clock()
        live = expired = markers = 0
        owners: set[str] = set()
        size = sys.getsizeof(self._records) + sys.getsizeof(self._by_owner)
        for store_id, record in self._records.items():
            if record.expires_at > now and is_import_marker(record.data):
                markers += 1
            elif record.expires_at > now:
                live += 1
                if record.owner is not None:
                    owners.add(record.owner)
            else:
                expired += 1
            size += sys.getsizeof(store_id) + _record_size(record)
        for owner, owned in self._by_owner.items():
            size += sys.getsizeof(owner) + sys.getsizeof(owned)
        return StoreStats(live, expired, len(owners), size, "memory", markers)

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
            self.owned(sid, rec.created_at, rec.updated_at, rec.expires_at, rec.device)
            for sid, rec in owned
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


def _record_size(record: StoredSession) -> int:
    """Bytes of one record's objects (its times are small floats, counted in the record)."""
    size = sys.getsizeof(record) + sys.getsizeof(record.data)
    for key, value in record.data.items():
        size += sys.getsizeof(key) + sys.getsizeof(value)
    for text in (record.expiry, record.owner, record.device):
        if text is not None:
            size += sys.getsizeof(text)
    return size

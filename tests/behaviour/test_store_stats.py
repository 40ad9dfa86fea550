"""``await store.stats()`` and ``clear_expired(progress=...)`` on every server store."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from asgi_sessions import FromStarlette, MemoryStore, Store, StoreCapabilityError, StoreStats
from asgi_sessions.stores.base import IMPORT_MARKER_KEY
from asgi_sessions.stores.cookie import CookieStore
from asgi_sessions.stores.postgres import PostgresStore
from asgi_sessions.stores.sqlite import SQLiteStore
from tests.clock import FakeClock
from tests.support import (
    OLD_SECRET,
    client_for,
    cookie_header,
    encoded,
    new_app,
    session_write,
    starlette_cookie,
)


async def seed(store: Store, clock: FakeClock, *, live: list[str | None], dying: int) -> None:
    """Live sessions with these owners, and ``dying`` that expire 60 s from now."""
    for number, owner in enumerate(live):
        change = session_write(clock(), set=encoded({"n": number}), create=True, owner=owner)
        await store.create(change)
    for number in range(dying):
        change = session_write(
            clock(), set=encoded({"n": number}), create=True, owner="gone", ttl=60
        )
        await store.create(change)


async def test_stats_count_live_and_expired_sessions_and_owners(
    store: Store, clock: FakeClock
) -> None:
    empty = await store.stats()
    assert (empty.sessions, empty.expired, empty.owners) == (0, 0, 0)
    await seed(store, clock, live=["alice", "alice", "bob", None], dying=2)
    clock.advance(120)

    stats = await store.stats()
    assert (stats.sessions, stats.expired, stats.owners) == (4, 2, 2)
    on_disk = isinstance(store, SQLiteStore | PostgresStore)
    assert stats.size_where == ("disk" if on_disk else "memory")
    assert stats.size_bytes > 0

    removed = await store.purge_expired()  # the hook, as a backend implements it
    # Redis drops expired records itself (here: at the real time our fake clock named),
    # so it finds none; the others remove both.
    assert (await store.stats()).expired == 2 - removed


async def test_stats_counts_an_imported_session_once_and_its_marker_apart(store: Store) -> None:
    """Issue 25: an import writes the session and a marker; ``stats`` counts one session."""
    old = await starlette_cookie({"user": "alice"})
    async with client_for(new_app(store, FromStarlette(OLD_SECRET))) as client:
        response = await client.get("/", headers=cookie_header("session", old))
        assert response.json()["data"] == {"user": "alice"}
    stats = await store.stats()
    assert (stats.sessions, stats.markers, stats.owners) == (1, 1, 0)


async def test_only_a_record_with_the_marker_key_alone_is_a_marker(
    store: Store, clock: FakeClock
) -> None:
    marker = {IMPORT_MARKER_KEY: "true"}
    await store.create(session_write(clock(), set=encoded(marker), create=True))
    # A session may hold a key named "_imported" beside others: still a session.
    both = encoded({**marker, "user": "bob"})
    await store.create(session_write(clock(), set=both, create=True, owner="bob"))
    await store.create(session_write(clock(), set=encoded(marker), create=True, ttl=60))
    clock.advance(120)  # the last marker has ended: expired, like any record
    stats = await store.stats()
    assert (stats.sessions, stats.markers, stats.owners, stats.expired) == (1, 1, 1, 1)


async def test_the_size_grows_with_the_data(store: Store, clock: FakeClock) -> None:
    await seed(store, clock, live=[None], dying=0)
    before = (await store.stats()).size_bytes
    # Random text: PostgreSQL compresses a repetitive value to almost nothing.
    blob = secrets.token_urlsafe(150_000)
    big = session_write(clock(), set=encoded({"blob": blob}), create=True)
    await store.create(big)
    assert (await store.stats()).size_bytes >= before + 100_000


async def test_clear_expired_reports_progress_after_each_batch(
    tmp_path: Path, clock: FakeClock
) -> None:
    async with SQLiteStore(tmp_path / "s.sqlite3", clock=clock, purge_batch=2) as store:
        await seed(store, clock, live=["alice"], dying=5)
        clock.advance(120)
        seen: list[int] = []
        assert await store.clear_expired(progress=seen.append) == 5
        assert seen == [2, 4, 5]
        assert (await store.stats()).sessions == 1


async def test_a_store_without_batches_reports_once(store: Store, clock: FakeClock) -> None:
    if isinstance(store, SQLiteStore):
        store.purge_batch = 1000
    await seed(store, clock, live=[], dying=3)
    clock.advance(120)
    seen: list[int] = []
    removed = await store.clear_expired(progress=seen.append)
    assert seen == [removed]


async def test_an_in_memory_sqlite_database_reports_its_size_in_memory(clock: FakeClock) -> None:
    async with SQLiteStore(":memory:", clock=clock) as store:
        await seed(store, clock, live=["alice"], dying=0)
        stats = await store.stats()
    assert (stats.sessions, stats.size_where) == (1, "memory")
    assert stats.size_bytes > 0


async def test_the_cookie_store_and_a_store_without_stats_say_so() -> None:
    with pytest.raises(StoreCapabilityError, match="no server-side record"):
        await CookieStore().stats()

    class Minimal(MemoryStore):
        stats = Store.stats

    with pytest.raises(StoreCapabilityError, match=r"does not implement Store\.stats"):
        await Minimal().stats()


def test_stats_are_a_small_frozen_record() -> None:
    stats = StoreStats(sessions=1, expired=0, owners=1, size_bytes=10, size_where="disk")
    with pytest.raises(AttributeError):
        stats.sessions = 2  # type: ignore[misc]

"""Integrity audits that read a store's internals (test-only), and a wipe between programs.

The public checks (``store.get``, ``list_sessions``) cannot see everything: a Redis hash
that lost its metadata reads as "no session", an SQLite data row whose session row is
gone is invisible, an owner-index entry whose session ended is skipped by the listing.
Each audit looks for exactly those, and checks that the records the store holds alive are
the ones the model holds alive, with the expiry setting the model expects.

A store without an audit here (a backend added later) still gets every public check;
``has_audit`` says so, and the test's summary line reports it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from asgi_sessions import Store
from asgi_sessions.stores.base import hash_key
from tests.model.reference import Model


def _alive_ids(model: Model, id_of: Callable[[str], str]) -> dict[str, Any]:
    """Store id -> record, for every record the model holds alive."""
    return {
        id_of(record.key): record
        for record in model.records.values()
        if record.key is not None and record.alive(model.now)
    }


def _same_setting(stored: str | None, expected: str | None) -> bool:
    if stored is None or expected is None or not stored.startswith("a:"):
        return stored == expected
    return expected.startswith("a:") and float(stored[2:]) == float(expected[2:])


Live = dict[str, tuple[str | None, str | None, float]]


def _compare(model: Model, live: Live, id_of: Callable[[str], str] = hash_key) -> list[str]:
    """``live``: store id -> (owner, expiry setting, updated_at) of every record the store
    holds alive; ``id_of`` maps a session key to its store id."""
    problems = []
    expected = _alive_ids(model, id_of)
    for store_id in live.keys() - expected.keys():
        problems.append(f"the store holds a live record the model does not ({store_id[:12]}…)")
    for store_id in expected.keys() - live.keys():
        problems.append(f"the store lacks live record {expected[store_id].label()}")
    for store_id in live.keys() & expected.keys():
        record = expected[store_id]
        owner, setting, updated = live[store_id]
        if owner != record.owner or not _same_setting(setting, record.expiry):
            problems.append(
                f"{record.label()} stores owner={owner!r} expiry={setting!r}, the model has "
                f"owner={record.owner!r} expiry={record.expiry!r}"
            )
        if updated != record.updated_at:
            problems.append(
                f"{record.label()} was last written at t+{updated - model.start:g}s, the "
                f"model says t+{record.updated_at - model.start:g}s"
            )
    return problems


# -- MemoryStore -----------------------------------------------------------------------


async def _memory_wipe(store: Any) -> None:
    store._records.clear()
    store._by_owner.clear()


async def _memory_audit(store: Any, model: Model) -> list[str]:
    problems = []
    now = store.clock()
    records, by_owner = store._records, store._by_owner
    for store_id, record in records.items():
        if not record.data and record.decoded is None:
            problems.append(f"empty record kept ({store_id[:12]}…)")
        if record.owner is not None and store_id not in by_owner.get(record.owner, ()):
            problems.append(f"record {store_id[:12]}… missing from {record.owner}'s index")
    for owner, store_ids in by_owner.items():
        for store_id in store_ids:
            record = records.get(store_id)
            if record is None or record.owner != owner:
                problems.append(f"{owner}'s index entry {store_id[:12]}… outlives its session")
    live: Live = {
        sid: (record.owner, record.expiry, record.updated_at)
        for sid, record in records.items()
        if record.expires_at > now
    }
    return problems + _compare(model, live)


# -- SQLiteStore -----------------------------------------------------------------------


async def _sqlite_rows(store: Any, query: str) -> list[Any]:
    def run(conn: sqlite3.Connection) -> list[Any]:
        return conn.execute(query).fetchall()

    rows: list[Any] = await store._run("audit", run)
    return rows


async def _sqlite_wipe(store: Any) -> None:
    def run(conn: sqlite3.Connection) -> None:
        tables = conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        for (table,) in tables:
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 (names from sqlite_master)

    await store._run("wipe", run)


async def _sqlite_audit(store: Any, model: Model) -> list[str]:
    problems = []
    now = store.clock()
    sessions = await _sqlite_rows(
        store, "SELECT id, expires_at, expiry, owner, updated_at FROM sessions"
    )
    data_ids = {row[0] for row in await _sqlite_rows(store, "SELECT sid FROM session_data")}
    ids = {row[0] for row in sessions}
    for orphan in data_ids - ids:
        problems.append(f"session_data rows without their sessions row ({orphan[:12]}…)")
    for store_id, expires, *_ in sessions:
        if expires > now and store_id not in data_ids:
            problems.append(f"live sessions row without data ({store_id[:12]}…)")
    live: Live = {
        sid: (owner, expiry, updated)
        for sid, expires, expiry, owner, updated in sessions
        if expires > now
    }
    return problems + _compare(model, live)


# -- RedisStore (one server, Sentinel, Cluster) ----------------------------------------
#
# Names come from the store's own layout (redis_layout.py): a cluster's carry slot tags,
# and "other" keys (the cluster's slot key) are not sessions. A record sealed by a move
# across slots (m:m) is dead for everyone and expires within a minute: skipped.


async def _redis_names(store: Any) -> dict[str, list[str]]:
    """The store's keys by kind ("session", "index", "other")."""
    kinds: dict[str, list[str]] = {"session": [], "index": [], "other": []}
    async for name in store.client.scan_iter(match=store.prefix + "*", count=1000):
        text = name.decode() if isinstance(name, bytes) else name
        kinds[store.layout.kind(text)].append(text)
    return kinds


async def _redis_wipe(store: Any) -> None:
    names = await _redis_names(store)
    doomed = names["session"] + names["index"]  # the slot key stays: processes cache it
    if doomed:
        # One command per key, pipelined: a cluster client routes each to its node.
        async with store.client.pipeline(transaction=False) as pipe:
            for name in doomed:
                pipe.delete(name)
            await pipe.execute()


async def _redis_audit(store: Any, model: Model) -> list[str]:
    problems = []
    now = store.clock()
    client, prefix = store.client, store.prefix
    names = await _redis_names(store)
    sessions, indexes = names["session"], names["index"]
    async with client.pipeline(transaction=False) as pipe:
        for name in sessions:
            pipe.hgetall(name)
            pipe.pexpiretime(name)
        for name in indexes:
            pipe.zrange(name, 0, -1)
        replies = await pipe.execute()
    live: Live = {}
    hashes: dict[str, dict[str, str]] = {}
    for index, name in enumerate(sessions):
        fields, expire_ms = replies[2 * index], replies[2 * index + 1]
        store_id = name[len(prefix) :]
        hashes[store_id] = fields
        if "m:m" in fields:
            continue  # sealed by a move to another slot
        missing = [field for field in ("m:e", "m:c", "m:u") if field not in fields]
        if missing:
            problems.append(f"partial session {store_id[:12]}…: {sorted(fields)} lacks {missing}")
            continue
        if not any(field.startswith("d:") for field in fields):
            problems.append(f"session {store_id[:12]}… kept without data")
        expires = float(fields["m:e"])
        if expire_ms != round(expires * 1000):
            problems.append(f"{store_id[:12]}… expires at {expire_ms} ms, m:e says {expires}")
        if expires > now:
            live[store_id] = (fields.get("m:o"), fields.get("m:x"), float(fields["m:u"]))
    # The listings (run just before) prune what Redis expired; what is left must be live.
    for name, members in zip(indexes, replies[2 * len(sessions) :], strict=True):
        owner = name.rpartition("owner:")[2]
        for member in members:
            fields = hashes.get(member, {})
            alive = float(fields.get("m:e", 0)) > now and "m:m" not in fields
            if fields.get("m:o") != owner or not alive:
                problems.append(f"{owner}'s index entry {member[:12]}… outlives its session")
    return problems + _compare(model, live, store.layout.member)


# -- PostgresStore ---------------------------------------------------------------------


async def _postgres_rows(store: Any, query: str) -> list[Any]:
    pool = await store._get_pool()
    async with pool.acquire() as conn:
        rows: list[Any] = await conn.fetch(store._sql.render(query))
    return rows


async def _postgres_wipe(store: Any) -> None:
    await _postgres_rows(store, "DELETE FROM {sessions}")  # its data rows cascade


async def _postgres_audit(store: Any, model: Model) -> list[str]:
    problems = []
    now = store.clock()
    sessions = await _postgres_rows(
        store,
        "SELECT encode(s.id, 'hex') AS id, s.expires_at, s.expiry, s.owner, s.updated_at, "
        "EXISTS (SELECT 1 FROM {data} AS d WHERE d.sid = s.pk) AS has_data "
        "FROM {sessions} AS s",
    )
    live: Live = {}
    for row in sessions:
        if row["expires_at"] > now:
            if not row["has_data"]:
                problems.append(f"live session row without data ({row['id'][:12]}…)")
            live[row["id"]] = (row["owner"], row["expiry"], row["updated_at"])
    # Data rows cannot outlive their session row: a foreign key cascades the delete.
    return problems + _compare(model, live)


# -- dispatch --------------------------------------------------------------------------

Wipe = Callable[[Any], Awaitable[None]]
Audit = Callable[[Any, Model], Awaitable[list[str]]]

_BY_CLASS: dict[str, tuple[Wipe, Audit]] = {
    "MemoryStore": (_memory_wipe, _memory_audit),
    "SQLiteStore": (_sqlite_wipe, _sqlite_audit),
    "RedisStore": (_redis_wipe, _redis_audit),
    "PostgresStore": (_postgres_wipe, _postgres_audit),
}


def has_audit(store: Store) -> bool:
    return type(store).__name__ in _BY_CLASS


async def wipe(store: Store) -> None:
    """Empty the store before a program, so its audit sees that program's records only."""
    if has_audit(store):
        await _BY_CLASS[type(store).__name__][0](store)


async def audit(store: Store, model: Model) -> list[str]:
    if not has_audit(store):
        return []
    return await _BY_CLASS[type(store).__name__][1](store, model)

"""The two layouts ``python -m bench postgres-layout`` compares, in raw asyncpg (no
asgi_sessions code), each save ONE statement (one round trip with a warm statement cache):

- ``rows``: ``r_sessions`` (surrogate ``pk``, unique hashed ``id``) + ``r_data`` keyed
  ``(sid, key)`` with ``ON DELETE CASCADE``; a save is one call of a PL/pgSQL function
  that locks the session row first (so concurrent saves of one session queue, and a
  concurrent delete cannot leave orphan rows), deletes, upserts, and deletes the session
  if it is empty after the merge.
- ``jsonb``: ``j_sessions`` with ``data jsonb`` (key -> the serializer's text); a save is
  one ``UPDATE ... SET data = (data - deleted) || set`` (PostgreSQL re-reads the newest row
  version after a lock wait, so the merge is per key), and a second statement only when
  the merge left it empty.

The schema is ``pg_layouts.sql``. Values are random text (TOAST compresses repeated
characters to nothing, which would flatter the jsonb layout).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import asyncpg

SCHEMA = (Path(__file__).parent / "pg_layouts.sql").read_text()

R_LOAD = """SELECT s.created_at, s.updated_at, s.expires_at, s.expiry, s.owner, d.key, d.value
FROM r_sessions s LEFT JOIN r_data d ON d.sid = s.pk WHERE s.id = $1 AND s.expires_at > $2"""
# The same load as one row: the keys and values as two arrays.
R_LOAD_ARRAYS = """SELECT s.created_at, s.updated_at, s.expires_at, s.expiry, s.owner,
    d.keys, d.values
FROM r_sessions s, LATERAL (SELECT array_agg(key) AS keys, array_agg(value) AS values
                            FROM r_data WHERE sid = s.pk) d
WHERE s.id = $1 AND s.expires_at > $2"""
R_SAVE = "SELECT r_save($1, $2, $3, $4, $5, $6, $7)"
R_ROTATE = "UPDATE r_sessions SET id = $2, updated_at = $3 WHERE id = $1 AND expires_at > $3"

J_LOAD = """SELECT created_at, updated_at, expires_at, expiry, owner, data::text
FROM j_sessions WHERE id = $1 AND expires_at > $2"""
J_SAVE = """UPDATE j_sessions SET
    data = CASE WHEN $4 THEN $2::jsonb ELSE (data - $3::text[]) || $2::jsonb END,
    updated_at = $5::float8, expires_at = $6::float8, purge_after = floor($6::float8 / 3600) * 3600
WHERE id = $1 AND expires_at > $5::float8 RETURNING data = '{}'::jsonb"""
J_DROP_EMPTY = "DELETE FROM j_sessions WHERE id = $1 AND data = '{}'::jsonb"
J_ROTATE = "UPDATE j_sessions SET id = $2, updated_at = $3 WHERE id = $1 AND expires_at > $3"
J_CREATE = """INSERT INTO j_sessions (id, data, created_at, updated_at, expires_at, purge_after)
VALUES ($1, $2::jsonb, $3::float8, $3, $4::float8, floor($4::float8 / 3600) * 3600)"""


def value(size: int) -> str:
    """A JSON-encoded random string of about ``size`` bytes."""
    return json.dumps(secrets.token_urlsafe(size)[:size])


def session(total: int, *, per_key: int = 100) -> dict[str, str]:
    """About ``total`` bytes over keys of ``per_key``-byte values."""
    return {f"key{i:05d}": value(per_key) for i in range(max(1, total // (per_key + 10)))}


def new_id() -> bytes:
    return secrets.token_bytes(32)


class Layout:
    name = ""
    tables: tuple[str, ...] = ()  # the sessions table first

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def create(self, sid: bytes, data: dict[str, str], now: float) -> None:
        raise NotImplementedError

    async def load(self, sid: bytes, now: float) -> dict[str, str] | None:
        raise NotImplementedError

    async def save(
        self, sid: bytes, set_: dict[str, str], deleted: list[str], now: float, *,
        replace: bool = False,
    ) -> bool | None:  # fmt: skip
        """True: saved; False: empty after the merge, deleted; None: the record was gone."""
        raise NotImplementedError

    async def rotate(self, old: bytes, new: bytes, now: float) -> bool:
        raise NotImplementedError


class Rows(Layout):
    name = "rows"
    tables = ("r_sessions", "r_data")

    async def create(self, sid: bytes, data: dict[str, str], now: float) -> None:
        await self.conn.execute(
            "SELECT r_create($1, $2, $3, $4, $5)", sid, list(data), list(data.values()), now,
            now + 86400,
        )  # fmt: skip

    async def load(self, sid: bytes, now: float) -> dict[str, str] | None:
        rows = await self.conn.fetch(R_LOAD, sid, now)
        return {r[5]: r[6] for r in rows if r[5] is not None} if rows else None

    async def load_arrays(self, sid: bytes, now: float) -> dict[str, str] | None:
        row = await self.conn.fetchrow(R_LOAD_ARRAYS, sid, now)
        return dict(zip(row[5] or (), row[6] or (), strict=True)) if row else None

    async def save(
        self, sid: bytes, set_: dict[str, str], deleted: list[str], now: float, *,
        replace: bool = False,
    ) -> bool | None:  # fmt: skip
        saved: bool | None = await self.conn.fetchval(
            R_SAVE, sid, list(set_), list(set_.values()), deleted, replace, now, now + 86400
        )
        return saved

    async def rotate(self, old: bytes, new: bytes, now: float) -> bool:
        return bool(await self.conn.execute(R_ROTATE, old, new, now) == "UPDATE 1")


class Jsonb(Layout):
    name = "jsonb"
    tables = ("j_sessions",)

    async def create(self, sid: bytes, data: dict[str, str], now: float) -> None:
        await self.conn.execute(J_CREATE, sid, json.dumps(data), now, now + 86400)

    async def load(self, sid: bytes, now: float) -> dict[str, str] | None:
        row = await self.conn.fetchrow(J_LOAD, sid, now)
        return json.loads(row[5]) if row else None

    async def save(
        self, sid: bytes, set_: dict[str, str], deleted: list[str], now: float, *,
        replace: bool = False,
    ) -> bool | None:  # fmt: skip
        empty = await self.conn.fetchval(
            J_SAVE, sid, json.dumps(set_), deleted, replace, now, now + 86400
        )
        if empty is None:
            return None
        if empty:
            await self.conn.execute(J_DROP_EMPTY, sid)
            return False
        return True

    async def rotate(self, old: bytes, new: bytes, now: float) -> bool:
        return bool(await self.conn.execute(J_ROTATE, old, new, now) == "UPDATE 1")


LAYOUTS: list[type[Layout]] = [Rows, Jsonb]

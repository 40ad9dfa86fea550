"""Fill an SQLite session store for docs/cli-session.txt: N expired sessions, and M live.

    python docs/seed_expired.py sessions.sqlite3 1000000 1000

The store creates its own schema and the live sessions (through ``store.create()``, with
an owner on every tenth); the expired rows then go in with one bulk INSERT per table (a
million ``store.create()`` calls would take minutes and prove nothing more). Each
expired session has one key and ended an hour ago.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import sys
import time

from asgi_sessions import SQLiteStore
from asgi_sessions.stores.base import SessionWrite


async def create_live(path: str, count: int) -> None:
    async with SQLiteStore(path) as store:
        for n in range(count):
            now = time.time()
            change = SessionWrite(
                set={"cart": json.dumps([f"item-{n}"])},
                deleted=frozenset(),
                replace=False,
                create=True,
                now=now,
                default_expires_at=now + 14 * 24 * 3600,
                expires_cap=None,
                created_at=now,
                owner=f"user{n // 10}" if n % 10 == 0 else None,
            )
            await store.create(change)


def seed(path: str, expired: int, live: int) -> None:
    asyncio.run(create_live(path, live))
    now = time.time()
    # Sorted ids fill the WITHOUT ROWID tables in key order: far fewer page splits.
    ids = sorted(hashlib.sha256(f"seed-{n}".encode()).hexdigest() for n in range(expired))
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB for the bulk load
        conn.executemany(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, NULL, NULL)",
            ((sid, now - 7200, now - 7200, now - 3600) for sid in ids),
        )
        conn.executemany(
            "INSERT INTO session_data VALUES (?, 'cart', ?)",
            ((sid, f'["item-{n}"]') for n, sid in enumerate(ids)),
        )


if __name__ == "__main__":
    seed(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))

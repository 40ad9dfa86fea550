"""Fill an SQLite session store with N expired sessions, for docs/cli-session.txt.

    python docs/seed_expired.py sessions.sqlite3 1000000

The store creates its own schema; the rows then go in with one bulk INSERT per table
(a million ``store.create()`` calls would take minutes and prove nothing more). Each
session has one key and expired an hour ago; every tenth has an owner.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import sys
import time

from asgi_sessions import SQLiteStore


async def create_schema(path: str) -> None:
    async with SQLiteStore(path) as store:
        await store.stats()  # opens the file and sets up the schema


def seed(path: str, count: int) -> None:
    asyncio.run(create_schema(path))
    now = time.time()
    ids = [hashlib.sha256(f"seed-{n}".encode()).hexdigest() for n in range(count)]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO sessions VALUES (?, ?, ?, ?, NULL, ?)",
            (
                (sid, now - 7200, now - 7200, now - 3600, f"user{n}" if n % 10 == 0 else None)
                for n, sid in enumerate(ids)
            ),
        )
        conn.executemany(
            "INSERT INTO session_data VALUES (?, 'cart', ?)",
            ((sid, f'["item-{n}"]') for n, sid in enumerate(ids)),
        )


if __name__ == "__main__":
    seed(sys.argv[1], int(sys.argv[2]))

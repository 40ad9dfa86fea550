"""The SQL alone: SQLiteStore's statements against the raw floor's, no Python session code.

``python -m bench.sqlite_sql [SECONDS]``: 1 and 2 processes, each one connection (as one
uvicorn worker has), looping a read (the store's one load query: metadata joined to the
session's key rows, against the floor's ``SELECT data`` of one row) or a write (the read,
then the commonest save: ``BEGIN IMMEDIATE``, the guarded renewal ``UPDATE``, one key row
``INSERT OR REPLACE``, ``COMMIT``; against the floor's ``SELECT`` + one-row upsert). The
statements are the store's own (imported), on a file the store made.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import sqlite3
import sys
import tempfile
import time

from asgi_sessions.stores import sqlite as store_sql

FLOOR_READ = "SELECT data FROM raw WHERE id = ?"
FLOOR_WRITE = "INSERT INTO raw VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET data = excluded.data"
KEY = "k" * 43


async def make(path: str) -> None:
    from asgi_sessions import SQLiteStore
    from bench.apps import BASE_DATA, change

    store = SQLiteStore(path)
    data = {k: f'"{v}"' for k, v in BASE_DATA.items()}
    await store.write(KEY, change(data, create=True))
    await store.aclose()
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE raw (id TEXT PRIMARY KEY, data TEXT NOT NULL)")
        conn.execute(FLOOR_WRITE, (KEY, repr(BASE_DATA)))


def loop(path: str, side: str, op: str, seconds: float, out: multiprocessing.Queue) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA synchronous = NORMAL")
    load = store_sql.SQLiteStore._load
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        now = time.time()
        if side == "floor":
            conn.execute(FLOOR_READ, (KEY,)).fetchall()
            if op == "write":
                conn.execute(FLOOR_WRITE, (KEY, f"{n:012d}" + "x" * 40))
        else:
            conn.execute(load, (now, KEY)).fetchall()
            if op == "write":
                expires = now + 3600
                bucket = store_sql.purge_after(expires)
                conn.execute("BEGIN IMMEDIATE")
                if conn.execute(store_sql._RENEW, (now, expires, KEY, now, bucket)).rowcount != 1:
                    conn.execute("UPDATE sessions SET purge_after = ? WHERE id = ?", (bucket, KEY))
                conn.execute(store_sql._PUT, (KEY, "counter", f'"{n:012d}"'))
                conn.execute("COMMIT")
        n += 1
    out.put(n)


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 3.0
    print("| operation | processes | floor ops/s | store SQL ops/s | store / floor |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sql.sqlite3")
        asyncio.run(make(path))
        for op in ("read", "write"):
            for procs in (1, 2):
                rates = {}
                for side in ("floor", "store", "floor", "store"):  # twice, interleaved
                    out: multiprocessing.Queue = multiprocessing.Queue()
                    ps = [multiprocessing.Process(target=loop, args=(path, side, op, seconds, out))
                          for _ in range(procs)]  # fmt: skip
                    for p in ps:
                        p.start()
                    for p in ps:
                        p.join()
                    rates.setdefault(side, []).append(sum(out.get() for _ in ps) / seconds)
                floor, ours = (max(rates[s]) for s in ("floor", "store"))
                print(f"| {op} | {procs} | {floor:,.0f} | {ours:,.0f} | {ours / floor:.2f}x |")


if __name__ == "__main__":
    main()

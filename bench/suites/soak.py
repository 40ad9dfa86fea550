"""A bounded soak against a real uvicorn (security.md 4.3): a mix of anonymous, reading,
writing, logging-in (``cycle_key``), logging-out (``flush``) and abandoning clients on
SQLite and Redis. Every ``--every`` seconds: requests/s, the server's RSS, the SQLite WAL
size and expired rows or the Redis DBSIZE and keys without a TTL, and errors. Sessions live
``--max-age`` seconds and the server purges expired records every ``--purge-every``
seconds, so the figures should level off.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from ..harness import Context, Section, log, sized, table
from ..served import PLAIN_HTTP
from ..services import REDIS, Unavailable, uvicorn_server

TITLE = "Soak through uvicorn"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stores", default="sqlite,redis", help="comma-separated")
    sized(parser, minutes=(10.0, 0.1, "per store"), every=(30.0, 3.0, "seconds between reports"))
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-age", type=int, default=60)
    parser.add_argument("--purge-every", type=float, default=15.0)


class Stats:
    def __init__(self) -> None:
        self.requests = self.errors = 0
        self.statuses: Counter[int] = Counter()


# What a user does next: the first entry whose bound its roll is under. The last one walks
# away from its session (a closed browser): the session must expire and be purged.
MIX = [(0.2, "/"), (0.55, "/read"), (0.8, "/write"), (0.92, "/login"), (0.97, "/logout")]


async def client_loop(base: str, stats: Stats, stop: float) -> None:
    """One user: logs in, reads and writes, logs out, abandons sessions, or stays anonymous."""
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=PLAIN_HTTP) as client:
        while time.monotonic() < stop:
            roll = random.random()
            path = next((path for bound, path in MIX if roll < bound), "/write")
            if roll >= MIX[-1][0]:
                client.cookies.clear()
            params = {
                "/write": {
                    "key": f"k{random.randrange(5)}",
                    "value": "x" * random.randrange(10, 200),
                },
                "/login": {"user": f"user{random.randrange(1000)}"},
            }.get(path, {})
            try:
                response = await client.get(path, params=params)
                stats.statuses[response.status_code] += 1
                # 400: a logout won over a concurrent write of the same user (by design).
                stats.errors += response.status_code >= 500
            except httpx.HTTPError:
                stats.errors += 1
            stats.requests += 1


def storage(store: str, where: Any) -> list[str]:
    """SQLite: the WAL's size, live and expired rows; Redis: DBSIZE, keys without a TTL."""
    if store == "sqlite":
        wal = Path(f"{where}-wal")
        size = wal.stat().st_size if wal.exists() else 0
        with sqlite3.connect(where, timeout=5) as conn:
            total, expired = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE expires_at < ?) FROM sessions",
                (time.time(),),
            ).fetchone()
        conn.close()
        return [f"WAL {size / 1024:,.0f} KiB", f"{total:,} rows, {expired:,} expired"]
    import redis

    with redis.Redis.from_url(where) as client:
        immortal = sum(1 for key in client.scan_iter(count=1000) if client.ttl(key) == -1)
        return [f"DBSIZE {client.dbsize():,}", f"{immortal} keys without TTL"]


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


async def soak(store: str, url: str, where: Any, args: argparse.Namespace) -> tuple[list, Stats]:
    env = {"BENCH_STORE_URL": url, "BENCH_MAX_AGE": str(args.max_age)}
    env["BENCH_PURGE_EVERY"] = str(args.purge_every)
    stats, rows = Stats(), []
    with uvicorn_server("bench.served:session_app", env) as (base, pid):
        started = last = time.monotonic()
        stop, done = started + args.minutes * 60, 0
        users = [client_loop(base, stats, stop) for _ in range(args.concurrency)]
        clients = asyncio.gather(*users)
        while (now := time.monotonic()) < stop:
            await asyncio.sleep(min(args.every, stop - now))
            now, rate = time.monotonic(), (stats.requests - done) / (time.monotonic() - last)
            last, done = now, stats.requests
            figures = await asyncio.to_thread(storage, store, where)
            cells = [f"{now - started:.0f}", f"{rate:,.0f}", f"{rss_mib(pid):.1f}", *figures]
            rows.append([store, *cells, stats.errors, f"{stats.requests:,}"])
            log("  " + " | ".join(map(str, rows[-1])))
        await clients
    return rows, stats


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rows, statuses = [], {}
    for store in args.stores.split(","):
        if store == "redis":
            try:  # its own database, emptied first, so DBSIZE counts this soak's keys alone
                url = where = ctx.services.url(REDIS).rsplit("/", 1)[0] + "/13"
            except Unavailable as exc:
                rows.append([store, f"skipped: {exc}", *[""] * 6])
                continue
            import redis

            with redis.Redis.from_url(url) as client:
                client.flushdb()
        else:
            where = ctx.tmpdir / "soak.sqlite3"
            url = f"sqlite:///{where}"  # an absolute path gives four slashes
        store_rows, stats = asyncio.run(soak(store, url, where, args))
        rows += store_rows
        statuses[store] = dict(sorted(stats.statuses.items()))
    head = ["store", "t s:", "req/s:", "server RSS MiB:", "storage", "records"]
    lines = [
        f"{args.minutes:g} minutes per store, {args.concurrency} clients, sessions live "
        f"{args.max_age} s, purged every {args.purge_every:g} s.",
        "",
        *table([*head, "errors:", "requests:"], rows),
        "",
        "Statuses: " + "; ".join(f"{k}: {v}" for k, v in statuses.items()),
        "(400: a logout won over a concurrent write of the same user, by design.)",
        "Goal: no 5xx or transport errors; RSS, WAL and records level off.",
    ]
    return Section(TITLE, lines, {"statuses": statuses})

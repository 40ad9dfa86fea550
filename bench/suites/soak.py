"""A bounded soak against a real uvicorn (security.md 4.3): a mix of anonymous, reading,
writing, logging-in (``cycle_key``), logging-out (``flush``) and abandoning clients on
SQLite and Redis. Every ``--every`` seconds: requests/s, the server's RSS, the SQLite WAL
size and expired rows or the Redis DBSIZE and keys without a TTL, and errors. Sessions live
``--max-age`` seconds and the server purges expired SQLite rows every ``--purge-every``
seconds, so the figures should level off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import ssl
import sys
import time
from collections import Counter
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from ..harness import Context, Section, log
from ..services import REDIS, Unavailable, uvicorn_server

TITLE = "Soak through uvicorn"
# Plain http:// only; one context for every client, since httpx would otherwise build (and
# load CA certificates into) a new one per client: ~50 ms of CPU each, hundreds of times.
PLAIN_HTTP = ssl.create_default_context()
SECRET = "soak-secret-key-that-is-long-enough-0000"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stores", default="sqlite,redis", help="comma-separated")
    parser.add_argument("--minutes", type=float, help="per store (10; quick 0.1)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-age", type=int, default=60)
    parser.add_argument("--purge-every", type=float, default=15.0)
    parser.add_argument("--every", type=float, help="seconds between reports (30; quick 3)")


# -- the served app (uvicorn --factory bench.suites.soak:make_app) -------------------------------


def make_app() -> Any:
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from asgi_sessions import SessionMiddleware, store_from_url

    store = store_from_url(os.environ["SOAK_STORE_URL"])
    max_age = int(os.environ.get("SOAK_MAX_AGE", "60"))
    purge_every = float(os.environ.get("SOAK_PURGE_EVERY", "15"))

    async def anonymous(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def read(request: Request) -> JSONResponse:
        session = await request.state.session
        return JSONResponse({"user": session.get("user"), "n": session.get("n", 0)})

    async def write(request: Request) -> JSONResponse:
        session = await request.state.session
        session["n"] = session.get("n", 0) + 1
        session[f"k{random.randrange(5)}"] = "x" * random.randrange(10, 200)
        return JSONResponse({"n": session["n"]})

    async def login(request: Request) -> JSONResponse:
        session = await request.state.session
        session["user"] = f"user{random.randrange(1000)}"
        await session.cycle_key()
        return JSONResponse({"ok": True})

    async def logout(request: Request) -> JSONResponse:
        session = await request.state.session
        await session.flush()
        return JSONResponse({"ok": True})

    async def purge_loop() -> None:
        while True:
            await asyncio.sleep(purge_every)
            try:
                await store.clear_expired()
            except Exception as exc:  # keep purging; the soak counts errors
                print(f"clear_expired failed: {exc}", file=sys.stderr, flush=True)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        task = asyncio.create_task(purge_loop())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await store.aclose()

    routes = [
        Route("/", anonymous),
        Route("/read", read),
        Route("/write", write, methods=["POST"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store, max_age=max_age)],
    )


# -- the driver -----------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Stats:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.statuses: Counter[int] = Counter()


async def client_loop(base: str, stats: Stats, stop: float) -> None:
    """One user: logs in, reads and writes, logs out, abandons sessions, or stays anonymous."""
    async with httpx.AsyncClient(base_url=base, timeout=10, verify=PLAIN_HTTP) as client:
        while time.monotonic() < stop:
            roll = random.random()
            try:
                if roll < 0.2:
                    response = await client.get("/", headers={"cookie": ""})
                elif roll < 0.55:
                    response = await client.get("/read")
                elif roll < 0.8:
                    response = await client.post("/write")
                elif roll < 0.92:
                    response = await client.post("/login")
                elif roll < 0.97:
                    response = await client.post("/logout")
                else:
                    # Walk away from the session (a closed browser): it must expire and be
                    # purged, or the store grows without bound.
                    client.cookies.clear()
                    response = await client.post("/write")
                stats.statuses[response.status_code] += 1
                # 400: a logout won over a concurrent write of the same user (by design).
                if response.status_code >= 500:
                    stats.errors += 1
            except httpx.HTTPError:
                stats.errors += 1
            stats.requests += 1


def _sqlite_figures(path: Path) -> tuple[int, int, int]:
    """(WAL bytes, live rows, expired rows)."""
    wal = Path(f"{path}-wal")
    wal_size = wal.stat().st_size if wal.exists() else 0
    if not path.exists():
        return wal_size, 0, 0
    conn = sqlite3.connect(path, timeout=5)
    try:
        now = time.time()
        total = conn.execute("SELECT count(*) FROM sessions").fetchone()[0]
        expired = conn.execute(
            "SELECT count(*) FROM sessions WHERE expires_at < ?", (now,)
        ).fetchone()[0]
    finally:
        conn.close()
    return wal_size, total, expired


def _redis_dbsize(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as client:
        return int(client.dbsize())


def _flush(url: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()


def _redis_immortal(url: str) -> int:
    """Keys with no TTL: the ones native expiry will never reclaim."""
    import redis

    with redis.Redis.from_url(url) as client:
        return sum(1 for key in client.scan_iter(count=1000) if client.ttl(key) == -1)


async def report_loop(
    store: str, every: float, server_pid: int, stats: Stats, stop: float, where: Any
) -> list[str]:
    started = last_time = time.monotonic()
    last_requests, lines = 0, []
    while True:
        await asyncio.sleep(min(every, max(0.0, stop - time.monotonic())))
        now = time.monotonic()
        rate = (stats.requests - last_requests) / (now - last_time)
        last_time, last_requests = now, stats.requests
        cells = [
            store,
            f"{now - started:.0f}",
            f"{rate:,.0f}",
            f"{_rss_kib(server_pid) / 1024:.1f}",
        ]
        if store == "sqlite":
            wal, total, expired = await asyncio.to_thread(_sqlite_figures, where)
            cells += [f"WAL {wal / 1024:,.0f} KiB", f"{total:,} rows, {expired:,} expired"]
        else:
            size = await asyncio.to_thread(_redis_dbsize, where)
            immortal = await asyncio.to_thread(_redis_immortal, where)
            cells += [f"DBSIZE {size:,}", f"{immortal} keys without TTL"]
        cells += [str(stats.errors), f"{stats.requests:,}"]
        lines.append("| " + " | ".join(cells) + " |")
        log("  " + lines[-1])
        if now >= stop:
            return lines


async def soak(
    store: str, url: str, where: Any, args: argparse.Namespace
) -> tuple[list[str], Stats]:
    minutes = args.minutes or 0.1
    env = {
        "SOAK_STORE_URL": url,
        "SOAK_MAX_AGE": str(args.max_age),
        "SOAK_PURGE_EVERY": str(args.purge_every),
    }
    stats = Stats()
    with uvicorn_server("bench.suites.soak:make_app", env) as (base, server_pid):
        stop = time.monotonic() + minutes * 60
        lines, *_ = await asyncio.gather(
            report_loop(store, args.every, server_pid, stats, stop, where),
            *(client_loop(base, stats, stop) for _ in range(args.concurrency)),
        )
    return lines, stats


def run(ctx: Context, args: argparse.Namespace) -> Section:
    args.minutes = args.minutes or (0.1 if ctx.quick else 10.0)
    args.every = args.every or (3.0 if ctx.quick else 30.0)
    lines = [
        f"{args.minutes:g} minutes per store, {args.concurrency} clients, sessions live "
        f"{args.max_age} s, SQLite purged every {args.purge_every:g} s.",
        "",
        "| store | t s | req/s | server RSS MiB | storage | records | errors | requests |",
        "|---|---:|---:|---:|---|---|---:|---:|",
    ]
    statuses = {}
    for store in args.stores.split(","):
        try:
            # Its own database, emptied first, so DBSIZE counts this soak's keys alone.
            url = where = (
                ctx.services.url(REDIS).rsplit("/", 1)[0] + "/13" if store == "redis" else ""
            )
        except Unavailable as exc:
            lines.append(f"| {store} | skipped: {exc} | | | | | | |")
            continue
        if store == "redis":
            url = where = url.rsplit("/", 1)[0] + "/13"
            _flush(url)
        else:
            where = ctx.tmpdir / "soak.sqlite3"
            url = f"sqlite:///{where}"  # an absolute path gives four slashes
        rows, stats = asyncio.run(soak(store, url, where, args))
        lines += rows
        statuses[store] = dict(sorted(stats.statuses.items()))
    lines += [
        "",
        "Statuses: " + "; ".join(f"{k}: {v}" for k, v in statuses.items()),
        "(400: a logout won over a concurrent write of the same user, by design.)",
        "Goal: no 5xx or transport errors; RSS, WAL and records level off.",
    ]
    return Section(TITLE, lines, {"statuses": statuses})

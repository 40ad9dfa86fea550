"""A bounded soak run against a real uvicorn server (security.md 4.3).

    .venv/bin/python -m bench.soak --store sqlite --minutes 2
    .venv/bin/python -m bench.soak --store redis --minutes 10 --concurrency 50

Starts uvicorn (a subprocess on 127.0.0.1, a free port) serving a small app whose
sessions live in SQLite or Redis, and drives it with a mix of anonymous, reading,
writing, logging-in (``cycle_key``) and logging-out (``flush``) clients. Every 30 s it
prints requests/s, the server's RSS, the SQLite WAL size or the Redis DBSIZE, the
expired-row count (SQLite) and the error count. Sessions live ``--max-age`` seconds
(60 by default) and the server clears expired SQLite rows every ``--purge-every`` seconds,
so the figures should level off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.services import redis_server, uvicorn_server

SECRET = "soak-secret-key-that-is-long-enough-0000"


# -- the served app (uvicorn --factory bench.soak:make_app) -------------------------------


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
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
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


def _redis_immortal(url: str) -> int:
    """Keys with no TTL: the ones native expiry will never reclaim."""
    import redis

    with redis.Redis.from_url(url) as client:
        return sum(1 for key in client.scan_iter(count=1000) if client.ttl(key) == -1)


async def report_loop(
    args: argparse.Namespace, server_pid: int, stats: Stats, stop: float, where: Any
) -> None:
    started = last_time = time.monotonic()
    last_requests = 0
    while True:
        await asyncio.sleep(min(args.every, max(0.0, stop - time.monotonic())))
        now = time.monotonic()
        rate = (stats.requests - last_requests) / (now - last_time)
        last_time, last_requests = now, stats.requests
        rss = _rss_kib(server_pid) / 1024
        line = f"t={now - started:6.0f}s  req/s={rate:7.1f}  rss={rss:6.1f} MiB"
        if args.store == "sqlite":
            wal, total, expired = await asyncio.to_thread(_sqlite_figures, where)
            line += f"  wal={wal / 1024:8.1f} KiB  rows={total:6d}  expired_rows={expired:5d}"
        else:
            size = await asyncio.to_thread(_redis_dbsize, where)
            immortal = await asyncio.to_thread(_redis_immortal, where)
            line += f"  dbsize={size:6d}  keys_without_ttl={immortal:5d}"
        line += f"  errors={stats.errors}  requests={stats.requests}"
        print(line, flush=True)
        if now >= stop:
            return


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--max-age", type=int, default=60)
    parser.add_argument("--purge-every", type=float, default=15.0)
    parser.add_argument("--every", type=float, default=30.0, help="seconds between reports")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as services:
        if args.store == "sqlite":
            where: Any = Path(tmp) / "soak.sqlite3"
            url = f"sqlite:///{where}"  # an absolute path gives four slashes
        else:
            url = services.enter_context(redis_server())
            where = url
        env = {
            "SOAK_STORE_URL": url,
            "SOAK_MAX_AGE": str(args.max_age),
            "SOAK_PURGE_EVERY": str(args.purge_every),
        }
        base, server_pid = services.enter_context(uvicorn_server("bench.soak:make_app", env))
        print(
            f"soak: store={args.store} ({url}) minutes={args.minutes} "
            f"concurrency={args.concurrency} max_age={args.max_age}s server pid={server_pid}",
            flush=True,
        )
        stats = Stats()
        stop = time.monotonic() + args.minutes * 60
        await asyncio.gather(
            report_loop(args, server_pid, stats, stop, where),
            *(client_loop(base, stats, stop) for _ in range(args.concurrency)),
        )
        print(f"statuses: {dict(sorted(stats.statuses.items()))}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

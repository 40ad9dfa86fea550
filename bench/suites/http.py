"""The same apps under uvicorn (one worker each, started up front), loaded round by round
by a raw-socket asyncio client with ``--concurrency`` keep-alive connections; requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..apps import ENDPOINTS, Built, Env, build, config
from ..harness import Context, Section, log
from ..services import REDIS, Unavailable, uvicorn_server
from ..stats import Case, Goal, fmt, ratio_rows, ratio_table

TITLE = "Under uvicorn (1 worker): requests/s [p10-p90 of rounds]"
CONFIGS = [
    "bare",
    "starlette",
    "starsessions-redis",
    "raw-redis",
    "raw-sqlite",
    "ours-memory",
    "ours-redis",
    "ours-sqlite",
]
# Throughput: ours at least this fraction of the floor's requests/s.
CASES = [
    Case("Redis read", "read", "raw-redis", "ours-redis", (Goal(0.95),), ("starsessions-redis",)),
    Case("Redis write", "write", "raw-redis", "ours-redis", (), ("starsessions-redis",)),
    Case("untouched", "untouched", "bare", "ours-redis", (), ("starlette",)),
    Case("memory read", "read", "bare", "ours-memory", (), ("starlette",)),
    Case("SQLite read", "read", "raw-sqlite", "ours-sqlite"),
    Case("SQLite write", "write", "raw-sqlite", "ours-sqlite"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, help="seconds per cell per round (2; quick 0.5)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (32)")


def app() -> Any:
    """``uvicorn --factory bench.suites.http:app``: the configuration BENCH_CONFIG names.

    Lifespan startup builds it (seeding its session) and writes the cookie to send to
    BENCH_COOKIE_FILE; every request then goes straight to the configuration's app.
    """
    env = Env(redis_url=os.environ.get("BENCH_REDIS_URL", ""), tmpdir=os.environ["BENCH_TMPDIR"])
    built: list[Built] = []

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await built[0].app(scope, receive, send)
        while (await receive())["type"] != "lifespan.shutdown":
            built.append(await build(config(os.environ["BENCH_CONFIG"]), env))
            cookie = Path(os.environ["BENCH_COOKIE_FILE"])
            cookie.with_suffix(".tmp").write_bytes(built[0].cookie or b"")
            cookie.with_suffix(".tmp").replace(cookie)
            await send({"type": "lifespan.startup.complete"})
        await built[0].aclose()
        await send({"type": "lifespan.shutdown.complete"})

    return asgi


async def load(port: int, path: str, cookie: bytes, concurrency: int, seconds: float) -> float:
    """Requests/s from ``concurrency`` keep-alive connections, one request in flight each."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench/1\r\n".encode()
        + (b"Cookie: " + cookie + b"\r\n" if cookie else b"")
        + b"\r\n"
    )
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    loop = asyncio.get_running_loop()
    counts, bad = [0] * concurrency, [0]

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        start = head.lower().find(b"content-length:")
        length = int(head[start + 15 : head.index(b"\r\n", start)]) if start >= 0 else 0
        await reader.readexactly(length)
        bad[0] += head[9:12] != b"200"

    async def worker(i: int, stop_at: float) -> None:
        while loop.time() < stop_at:
            await one(*conns[i])
            counts[i] += 1

    for conn in conns:  # each connection once, untimed
        await one(*conn)
    started = loop.time()
    await asyncio.gather(*(worker(i, started + seconds) for i in range(concurrency)))
    elapsed = loop.time() - started
    for _, writer in conns:
        writer.close()
    if bad[0]:
        raise RuntimeError(f"{bad[0]} requests to {path} on port {port} did not answer 200")
    return sum(counts) / elapsed


def run(ctx: Context, args: argparse.Namespace) -> Section:
    seconds = args.seconds or (0.5 if ctx.quick else 2.0)
    rounds = args.rounds or (1 if ctx.quick else 3)
    names, skipped = list(CONFIGS), {}
    try:
        redis_url = ctx.services.url(REDIS)
    except Unavailable as exc:
        redis_url, skipped = "", {n: str(exc) for n in names if "redis" in n}
        names = [n for n in names if n not in skipped]
    rps: dict[str, dict[str, list[float]]] = {n: {e: [] for e in ENDPOINTS} for n in names}
    with ExitStack() as stack:
        servers = {}
        for name in names:
            cookie = ctx.tmpdir / f"cookie-{name}"
            env = {
                "BENCH_CONFIG": name,
                "BENCH_REDIS_URL": redis_url,
                "BENCH_TMPDIR": str(ctx.tmpdir),
                "BENCH_COOKIE_FILE": str(cookie),
            }
            base, _ = stack.enter_context(uvicorn_server("bench.suites.http:app", env))
            servers[name] = (int(base.rsplit(":", 1)[1]), cookie.read_bytes())
        log(f"  {len(servers)} uvicorn servers, {rounds} rounds x {seconds} s per cell")

        async def drive() -> None:
            for port, cookie in servers.values():  # warm-up: first requests, pools, caches
                for endpoint in ENDPOINTS:
                    await load(port, f"/{endpoint}", cookie, args.concurrency, 0.3)
            for _ in range(rounds):
                for name, (port, cookie) in servers.items():
                    for endpoint in ENDPOINTS:
                        value = await load(port, f"/{endpoint}", cookie, args.concurrency, seconds)
                        rps[name][endpoint].append(value)

        asyncio.run(drive())
    rows = ratio_rows(rps, CASES, higher_is_better=True)
    lines = [
        f"{args.concurrency} keep-alive connections, {rounds} rounds x {seconds} s per cell; "
        "uvicorn with httptools.",
        "",
        "| configuration | untouched req/s | read req/s | write req/s |",
        "|---|---:|---:|---:|",
        *(
            f"| `{n}` | " + " | ".join(fmt(rps[n][e], digits=0) for e in ENDPOINTS) + " |"
            for n in names
        ),
        "",
        "Throughput ratios (higher is better):",
        "",
        *ratio_table(rows),
    ]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in skipped.items())]
    data = {
        "seconds": seconds,
        "rounds": rounds,
        "concurrency": args.concurrency,
        "rps": rps,
        "ratios": rows,
        "skipped": skipped,
    }
    return Section(TITLE, lines, data)

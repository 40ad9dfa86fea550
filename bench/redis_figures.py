"""RedisStore against raw redis-py, and round trips per request through the middleware.

Run: ``.venv/bin/python -m bench.redis_figures`` (starts its own redis-server on a free
loopback port unless ``REDIS_URL`` is set). Variants run in interleaved rounds, the order
alternating, and each figure is the median of the rounds' mean times, so drift in the
machine's speed hits every variant alike.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import redis
import redis.asyncio
from redis.utils import HIREDIS_AVAILABLE
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_sessions import SessionMiddleware
from asgi_sessions.stores.base import SessionWrite
from asgi_sessions.stores.redis import RedisStore
from bench.services import redis_server

ROUNDS = 15
OPS = 200
SECRET = "bench-secret-key-that-is-long-enough-0000"

Op = Callable[[], Awaitable[Any]]


def session_data(size: int) -> dict[str, str]:
    """About ``size`` bytes of JSON-encoded values over 10-byte-ish keys, 100 bytes each."""
    return {f"key{i:05d}": json.dumps("x" * 96) for i in range(max(1, size // 110))}


def write(data: dict[str, str], *, create: bool, now: float) -> SessionWrite:
    return SessionWrite(
        set=data, deleted=frozenset(), replace=False, create=create,
        expires_at=now + 3600, created_at=now, updated_at=now,
    )  # fmt: skip


async def compare(variants: dict[str, Op]) -> dict[str, tuple[float, float]]:
    """Median over rounds of the mean (wall, CPU) seconds per operation, rounds interleaved.

    The CPU time is this process's alone: on a busy machine it is the steadier figure, and
    in Python the client, not the server, is where a Redis call spends its time.
    """
    names = list(variants)
    for name in names:  # warm up: connections, loaded scripts
        for _ in range(20):
            await variants[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(ROUNDS):
        for name in names if round_ % 2 == 0 else reversed(names):
            op = variants[name]
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(OPS):
                await op()
            wall[name].append((time.perf_counter() - started) / OPS)
            cpu[name].append((time.process_time() - cpu_started) / OPS)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in names}


def line(label: str, seconds: tuple[float, float]) -> str:
    return f"  {label:<44} {seconds[0] * 1e6:8.1f} µs wall {seconds[1] * 1e6:8.1f} µs CPU"


def ratio(label: str, a: tuple[float, float], b: tuple[float, float], goal: float) -> str:
    walls, cpus = a[0] / b[0], a[1] / b[1]
    verdict = "ok" if walls <= goal else "OVER GOAL"
    return f"  {label:<44} {walls:5.2f}x wall {cpus:5.2f}x CPU  (goal <= {goal}x wall: {verdict})"


async def store_figures(url: str) -> None:
    # Configured as RedisStore.from_url configures its own; the raw calls share it.
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    store = RedisStore(client)
    try:
        now = time.time()
        small, large = session_data(1024), session_data(100 * 1024)
        await store.save("small" * 9, write(small, create=True, now=now))
        await store.save("large" * 9, write(large, create=True, now=now))
        small_bytes = sum(len(k) + len(v) + 2 for k, v in small.items())
        blob = json.dumps(small)
        await client.set("raw", blob)
        print(f"session of {len(small)} keys (~{small_bytes} B) vs a raw value of {len(blob)} B")

        one = {"key00000": json.dumps("y" * 96)}

        async def load() -> None:
            await store.load("small" * 9)

        async def raw_get() -> None:
            await client.get("raw")

        async def save_small() -> None:
            await store.save("small" * 9, write(one, create=False, now=time.time()))

        async def save_large() -> None:
            await store.save("large" * 9, write(one, create=False, now=time.time()))

        async def raw_get_set() -> None:
            await client.get("raw")
            await client.set("raw", blob, ex=3600)

        async def load_save() -> None:
            await store.load("small" * 9)
            await save_small()

        medians = await compare(
            {
                "load": load,
                "raw GET": raw_get,
                "save 1 changed key (1 KB)": save_small,
                "save 1 changed key (100 KB)": save_large,
                "raw GET + SET": raw_get_set,
                "load + save 1 changed key": load_save,
            }
        )
        print(f"medians of {ROUNDS} interleaved rounds x {OPS} ops, one connection:")
        for name, seconds in medians.items():
            print(line(name, seconds))
        print("(1) load vs raw GET of the same size:")
        print(ratio("RedisStore.load / GET", medians["load"], medians["raw GET"], 1.15))
        print("(2) saves:")
        print(
            ratio(
                "save of 1 changed key / (raw GET + SET)",
                medians["save 1 changed key (1 KB)"],
                medians["raw GET + SET"],
                1.15,
            )
        )
        print(
            ratio(
                "load + save / (raw GET + SET)",
                medians["load + save 1 changed key"],
                medians["raw GET + SET"],
                1.15,
            )
        )
        print(
            ratio(
                "100 KB / 1 KB session, 1 key changed",
                medians["save 1 changed key (100 KB)"],
                medians["save 1 changed key (1 KB)"],
                1.5,
            )
        )
    finally:
        await client.aclose()


async def round_trips(url: str) -> None:
    client = redis.asyncio.Redis.from_url(url)
    sent: Counter[str] = Counter()
    original = client.execute_command

    async def counted(*args: Any, **options: Any) -> Any:
        sent[str(args[0]).upper()] += 1
        return await original(*args, **options)

    client.execute_command = counted  # type: ignore[method-assign]
    store = RedisStore(client)

    async def untouched(request: Request) -> JSONResponse:
        return JSONResponse({})

    async def read(request: Request) -> JSONResponse:
        session = await request.state.session
        return JSONResponse({"n": session.get("n")})

    async def write_(request: Request) -> JSONResponse:
        session = await request.state.session
        session["n"] = session.get("n", 0) + 1
        return JSONResponse({})

    app = Starlette(
        routes=[Route("/untouched", untouched), Route("/read", read), Route("/write", write_)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            await http.get("/write")  # loads the scripts; the cookie now names a session
            await store.delete("warm" * 11)
            cookie = {"session": http.cookies["session"]}
            figures = []
            for label, path, cookies in [
                ("untouched", "/untouched", cookie),
                ("read", "/read", cookie),
                ("write (existing session)", "/write", cookie),
                ("first write (new session)", "/write", {}),
            ]:
                http.cookies.clear()
                http.cookies.update(cookies)
                sent.clear()
                response = await http.get(path)
                response.raise_for_status()
                commands = ", ".join(f"{n} {c}" for c, n in sorted(sent.items())) or "-"
                figures.append(f"  {label:<28} {sum(sent.values())}   ({commands})")
        print("(3) round trips per request through SessionMiddleware (goal 0/1/2/1):")
        print("\n".join(figures))
    finally:
        await client.aclose()


# Fills a database with sessions of 100,000 other owners, in batches so the server stays
# responsive.
_FILL = """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  local sid = string.format('%064x', i)
  redis.call('HSET', 'asgi_sessions:' .. sid, 'm:e', ARGV[3], 'm:o', 'o' .. (i % 100000))
  redis.call('ZADD', 'asgi_sessions:owner:o' .. (i % 100000), ARGV[3], sid)
end
"""


async def owner_index_scaling(url: str) -> None:
    base = url.rsplit("/", 1)[0]
    clients = []
    variants: dict[str, Op] = {}
    try:
        for db, size in ((14, 1_000), (15, 1_000_000)):
            client = redis.asyncio.Redis.from_url(f"{base}/{db}")
            clients.append(client)
            await client.flushdb()
            fill = client.register_script(_FILL)
            for start in range(0, size, 50_000):
                end = min(start + 50_000, size) - 1
                await fill(args=[start, end, time.time() + 3600])
            store = RedisStore(client)
            for i in range(10):
                now = time.time()
                change = SessionWrite(
                    set={"a": "1"}, deleted=frozenset(), replace=False, create=True,
                    expires_at=now + 3600, created_at=now, updated_at=now, owner="me",
                )  # fmt: skip
                await store.save(f"me-{i}".ljust(43, "x"), change)
            assert len(await store.list_sessions("me")) == 10

            async def listing(store: RedisStore = store) -> None:
                await store.list_sessions("me")

            variants[f"list 10 sessions among {size:,}"] = listing
        medians = await compare(variants)
        print("(4) owner index: list_sessions of an owner with 10 sessions:")
        for name, seconds in medians.items():
            print(line(name, seconds))
        small, large = medians.values()
        print(ratio("among 1,000,000 / among 1,000", large, small, 1.5))
    finally:
        for client in clients:
            await client.flushdb()
            await client.aclose()


async def main() -> None:
    with redis_server() as url:
        with redis.Redis.from_url(url) as sync:
            sync.flushdb()
            version = sync.info("server")["redis_version"]
        parser = "hiredis" if HIREDIS_AVAILABLE else "pure-Python (pip install hiredis)"
        print(f"redis-server {version} at {url}, redis-py {redis.__version__}, {parser} parser")
        await store_figures(url)
        await round_trips(url)
        if os.environ.get("REDIS_URL"):
            print("(4) skipped: it fills databases 14 and 15, so it runs on its own server only")
        else:
            await owner_index_scaling(url)
        with redis.Redis.from_url(url) as sync:
            sync.delete(*sync.keys("asgi_sessions:*"), "raw")


if __name__ == "__main__":
    asyncio.run(main())

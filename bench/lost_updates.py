"""Lost updates and resurrections under concurrent requests on one session (security.md 2.13).

    .venv/bin/python -m bench.lost_updates                 # 1,000 trials per store and size
    .venv/bin/python -m bench.lost_updates --trials 100 --stores memory sqlite

Each trial creates a session, then sends N concurrent requests that each load it, meet at
an ``asyncio.Barrier`` and set a different key; a lost key is one missing afterwards.
A resurrection trial races a logout (``flush()``) with a write that loaded first; the
session must stay deleted. Redis: ``REDIS_URL``, or a private ``redis-server`` is started.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_sessions import MemoryStore, SessionMiddleware, Store
from bench.services import redis_server

SECRET = "bench-secret-key-that-is-long-enough-000"


class Bench:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.barrier = asyncio.Barrier(2)
        self.loaded = asyncio.Event()
        self.logged_out = asyncio.Event()
        routes = [
            Route("/create", self.create, methods=["POST"]),
            Route("/write", self.write, methods=["POST"]),
            Route("/slow_write", self.slow_write, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/key", self.key),
        ]
        self.app = Starlette(
            routes=routes,
            middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
        )

    async def create(self, request: Request) -> JSONResponse:
        session = await request.state.session
        session["base"] = 0
        return JSONResponse({})

    async def write(self, request: Request) -> JSONResponse:
        session = await request.state.session
        await self.barrier.wait()
        name = request.query_params["k"]
        session[name] = name
        return JSONResponse({})

    async def slow_write(self, request: Request) -> JSONResponse:
        session = await request.state.session
        self.loaded.set()
        await self.logged_out.wait()
        session["late"] = True
        return JSONResponse({})

    async def logout(self, request: Request) -> JSONResponse:
        session = await request.state.session
        await session.flush()
        return JSONResponse({})

    async def key(self, request: Request) -> JSONResponse:
        session = await request.state.session
        return JSONResponse({"key": session.session_key})


async def _new_session(client: httpx.AsyncClient) -> tuple[dict[str, str], str]:
    created = await client.post("/create", headers={"cookie": ""})
    cookie = {"cookie": f"session={created.cookies['session']}"}
    key = (await client.get("/key", headers=cookie)).json()["key"]
    return cookie, key


async def lost_keys(bench: Bench, client: httpx.AsyncClient, writers: int) -> int:
    bench.barrier = asyncio.Barrier(writers)
    cookie, key = await _new_session(client)
    names = [f"k{i}" for i in range(writers)]
    await asyncio.gather(
        *(client.post("/write", params={"k": name}, headers=cookie) for name in names)
    )
    record = await bench.store.get(key)
    stored = record.get_decoded() if record is not None else {}
    return sum(1 for name in names if stored.get(name) != name)


async def resurrected(bench: Bench, client: httpx.AsyncClient) -> bool:
    bench.loaded.clear()
    bench.logged_out.clear()
    cookie, key = await _new_session(client)
    writer = asyncio.create_task(client.post("/slow_write", headers=cookie))
    await bench.loaded.wait()
    await client.post("/logout", headers=cookie)
    bench.logged_out.set()
    late = await writer
    return late.status_code != 400 or await bench.store.get(key) is not None


async def run_store(kind: str, store: Store, trials: int) -> dict[str, Any]:
    bench = Bench(store)
    transport = httpx.ASGITransport(app=bench.app)
    result: dict[str, Any] = {"store": kind}
    async with store, httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for writers in (2, 10):
            started = time.perf_counter()
            lost = 0
            for _ in range(trials):
                lost += await lost_keys(bench, client, writers)
            result[f"lost_keys_{writers}"] = lost
            result[f"seconds_{writers}"] = round(time.perf_counter() - started, 1)
        result["resurrections"] = sum([await resurrected(bench, client) for _ in range(trials)])
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument(
        "--stores",
        nargs="+",
        default=["memory", "sqlite", "redis"],
        choices=["memory", "sqlite", "redis"],
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as services:
        for kind in args.stores:
            if kind == "memory":
                store: Store = MemoryStore()
            elif kind == "sqlite":
                from asgi_sessions.stores.sqlite import SQLiteStore

                store = SQLiteStore(Path(tmp) / "lost_updates.sqlite3")
            else:
                from asgi_sessions.stores.redis import RedisStore

                # Started here, after the stores listed before it have run.
                url = services.enter_context(redis_server())
                store = RedisStore.from_url(url, prefix="bench_lost_updates:")
            result = await run_store(kind, store, args.trials)
            print(
                f"{kind:7} trials={args.trials}  lost keys: 2 writers={result['lost_keys_2']} "
                f"({result['seconds_2']} s), 10 writers={result['lost_keys_10']} "
                f"({result['seconds_10']} s)  resurrections={result['resurrections']}",
                flush=True,
            )


if __name__ == "__main__":
    asyncio.run(main())

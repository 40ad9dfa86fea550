"""Lost updates and resurrections under concurrent requests on one session (security.md
2.13). Each trial creates a session, then N concurrent requests load it, meet at an
``asyncio.Barrier`` and each set a different key; a lost key is one missing afterwards. A
resurrection trial races a logout (``flush()``) with a write that loaded first; the session
must stay deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_sessions import SessionMiddleware, Store

from ..apps import SECRET
from ..harness import Context, Section
from ..services import REDIS, Unavailable

TITLE = "Lost updates and resurrections under concurrent requests"
STORES = ("memory", "sqlite", "redis")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, help="trials per store and size (1000; quick 20)")
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated")


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


def make_store(kind: str, ctx: Context) -> Store:
    from asgi_sessions import store_from_url

    if kind == "memory":
        return store_from_url("memory://")
    if kind == "sqlite":
        return store_from_url(f"sqlite:///{ctx.tmpdir / 'lost_updates.sqlite3'}")
    from asgi_sessions.stores.redis import RedisStore

    return RedisStore.from_url(ctx.services.url(REDIS), prefix="bench_lost_updates:")


def run(ctx: Context, args: argparse.Namespace) -> Section:
    trials = args.trials or (20 if ctx.quick else 1000)
    lines = [
        f"{trials} trials per store and size.",
        "",
        "| store | lost keys, 2 writers | lost keys, 10 writers | resurrections | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    results: dict[str, Any] = {}
    for kind in args.stores.split(","):
        try:
            store = make_store(kind, ctx)
        except Unavailable as exc:
            lines.append(f"| {kind} | skipped: {exc} | | | |")
            continue
        r = results[kind] = asyncio.run(run_store(kind, store, trials))
        lines.append(
            f"| {kind} | {r['lost_keys_2']} | {r['lost_keys_10']} | "
            f"{r['resurrections']} | {r['seconds_2'] + r['seconds_10']:.1f} |"
        )
    lines += ["", "Goal: 0 lost keys and 0 resurrections on every store."]
    return Section(TITLE, lines, {"trials": trials, "results": results})

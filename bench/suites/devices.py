"""Your devices: what keeping a signed-in session's device and last seen costs the
requests that only read it (issue 25).

Read-only requests of one session on MemoryStore and SQLite, in-process: anonymous, and
signed in (owner set, device recorded at sign-in); each without rolling expiry and with
``save_every_request=True`` (the default ``renew_interval``, 60 s). Store writes are
counted over a simulated hour with a request every 5 s (exact); CPU and wall µs per
request are medians of interleaved rounds (the clock stands still there, so no renewal
is timed). Goal: no write is added, and a signed-in read costs what an anonymous one does.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_sessions import MemoryStore, SessionMiddleware, SQLiteStore

from ..apps import SECRET
from ..asgi import call
from ..harness import Context, Section
from ..stats import time_ops

TITLE = "Your devices: read-only requests of signed-in sessions"
GAP, HOUR = 5.0, 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="interleaved rounds (15; quick 3)")
    parser.add_argument("--requests", type=int, help="requests per round (300; quick 30)")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def counting(store: Any) -> Any:
    """Count the writes that reach ``store`` (creates, saves, renewals, rotations)."""
    store.writes = 0
    write, move = store.write, store.move

    async def counted_write(*args: Any) -> Any:
        store.writes += 1
        return await write(*args)

    async def counted_move(*args: Any) -> Any:
        store.writes += 1
        return await move(*args)

    store.write, store.move = counted_write, counted_move
    return store


def app(store: Any, rolling: bool) -> Starlette:
    async def seed(request: Request) -> PlainTextResponse:
        session = await request.state.session
        session["user"] = "alice"
        session["cart"] = ["book", "pen"]
        if request.query_params.get("sign_in"):
            session.owner = "alice"
        return PlainTextResponse("seeded")

    async def read(request: Request) -> PlainTextResponse:
        session = await request.state.session
        return PlainTextResponse(session["user"])

    middleware = Middleware(
        SessionMiddleware, secret_key=SECRET, store=store, save_every_request=rolling
    )
    routes = [Route("/seed", seed), Route("/read", read)]
    return Starlette(routes=routes, middleware=[middleware])


async def measure(ctx: Context, rounds: int, requests: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    ops: dict[str, Any] = {}
    stores: list[Any] = []
    for kind in ("memory", "sqlite"):
        for rolling in (False, True):
            for signed_in in (False, True):
                clock = Clock()
                if kind == "memory":
                    store: Any = MemoryStore(clock=clock)
                else:
                    name = f"devices-{int(rolling)}{int(signed_in)}.sqlite3"
                    store = SQLiteStore(ctx.tmpdir / name, clock=clock)
                stores.append(counting(store))
                built = app(store, rolling)
                query = b"sign_in=1" if signed_in else b""
                cookie = (await call(built, "/seed", query_string=query)).set_cookie()
                name = (
                    f"{kind}, {'rolling' if rolling else 'no rolling'}, "
                    f"{'signed in' if signed_in else 'anonymous'}"
                )
                listed = await store.list_sessions("alice")
                device = listed[0].user_agent if listed else None
                before = store.writes
                for _ in range(int(HOUR / GAP)):
                    clock.now += GAP
                    reply = await call(built, "/read", cookie)
                    if reply.status != 200:
                        raise RuntimeError(f"{name}: a read answered {reply.status}")
                    cookie = reply.set_cookie() or cookie
                results[name] = {
                    "writes_per_hour": store.writes - before,
                    "device": device,
                }

                async def one(built: Any = built, cookie: Any = cookie) -> None:
                    await call(built, "/read", cookie)

                ops[name] = one
    timings = await time_ops(ops, rounds, requests)
    for name, (wall, cpu) in timings.items():
        results[name]["wall_us"] = wall * 1e6
        results[name]["cpu_us"] = cpu * 1e6
    for store in stores:
        await store.aclose()
    return results


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds = args.rounds or (3 if ctx.quick else 15)
    requests = args.requests or (30 if ctx.quick else 300)
    results = asyncio.run(measure(ctx, rounds, requests))
    lines = [
        f"One session read every {GAP:g} s for a simulated hour (store writes, exact), and "
        f"µs per read-only request (median of {rounds} interleaved rounds of {requests}; "
        "CPU is the process's). Signed in: `session.owner` set, device recorded at "
        "sign-in. Rolling: `save_every_request=True`, `renew_interval` 60 s.",
        "",
        "| store, expiry, session | writes per hour | CPU µs | vs anonymous | wall µs |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, cell in results.items():
        anonymous = results[name.replace("signed in", "anonymous")]
        ratio = cell["cpu_us"] / anonymous["cpu_us"] - 1
        lines.append(
            f"| {name} | {cell['writes_per_hour']} | {cell['cpu_us']:.1f} | "
            f"{ratio:+.1%} | {cell['wall_us']:.1f} |"
        )
    lines += [
        "",
        "Without rolling expiry a read writes nothing, signed in or not; with it, the "
        "renewal that happens anyway (at most once per `renew_interval`) is what moves "
        "last seen: no write is added for devices.",
    ]
    data = {"rounds": rounds, "requests": requests, "results": results}
    return Section(TITLE, lines, data)

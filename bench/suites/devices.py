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
import itertools
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_sessions import MemoryStore, SessionMiddleware, SQLiteStore

from ..apps import SECRET, Clock, counting, seed
from ..asgi import call
from ..harness import Context, Section, sized, table
from ..stats import time_ops

TITLE = "Your devices: read-only requests of signed-in sessions"
GAP, HOUR = 5.0, 3600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sized(parser, rounds=(15, 3, "interleaved rounds"), requests=(300, 30, "requests per round"))


def app(store: Any, rolling: bool) -> Starlette:
    async def sign_in(request: Request) -> PlainTextResponse:
        session = await request.state.session
        session.update({"user": "alice", "cart": ["book", "pen"]})
        if request.query_params.get("owner"):
            session.owner = "alice"
        return PlainTextResponse("seeded")

    async def read(request: Request) -> PlainTextResponse:
        return PlainTextResponse((await request.state.session)["user"])

    mw = Middleware(SessionMiddleware, secret_key=SECRET, store=store, save_every_request=rolling)
    return Starlette(routes=[Route("/seed", sign_in), Route("/read", read)], middleware=[mw])


async def measure(ctx: Context, rounds: int, requests: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    ops, stores = {}, []
    for kind, rolling, signed_in in itertools.product(
        ("memory", "sqlite"), (False, True), (False, True)
    ):
        clock = Clock()
        path = ctx.tmpdir / f"devices-{int(rolling)}{int(signed_in)}.sqlite3"
        store = MemoryStore(clock=clock) if kind == "memory" else SQLiteStore(path, clock=clock)
        stores.append(counting(store))
        built = app(store, rolling)
        cookie = await seed(built, query_string=b"owner=1" if signed_in else b"")
        name = f"{kind}, {'rolling' if rolling else 'no rolling'}, "
        name += "signed in" if signed_in else "anonymous"
        listed = await store.list_sessions("alice")
        before = store.writes
        for _ in range(int(HOUR / GAP)):
            clock.now += GAP
            reply = await call(built, "/read", cookie)
            if reply.status != 200:
                raise RuntimeError(f"{name}: a read answered {reply.status}")
            cookie = reply.set_cookie() or cookie
        results[name] = {"writes_per_hour": store.writes - before}
        results[name]["device"] = listed[0].user_agent if listed else None
        ops[name] = lambda built=built, cookie=cookie: call(built, "/read", cookie)
    for name, (wall, cpu) in (await time_ops(ops, rounds, requests)).items():
        results[name] |= {"wall_us": wall * 1e6, "cpu_us": cpu * 1e6}
    for store in stores:
        await store.aclose()
    return results


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds, requests = args.rounds, args.requests
    results = asyncio.run(measure(ctx, rounds, requests))
    rows = []
    for name, cell in results.items():
        anonymous = results[name.replace("signed in", "anonymous")]
        ratio = cell["cpu_us"] / anonymous["cpu_us"] - 1
        rows.append([name, cell["writes_per_hour"], f"{cell['cpu_us']:.1f}", f"{ratio:+.1%}"])
        rows[-1].append(f"{cell['wall_us']:.1f}")
    head = ["store, expiry, session", "writes per hour:", "CPU µs:", "vs anonymous:", "wall µs:"]
    lines = [
        f"One session read every {GAP:g} s for a simulated hour (store writes, exact), and "
        f"µs per read-only request (median of {rounds} interleaved rounds of {requests}; "
        "CPU is the process's). Signed in: `session.owner` set, device recorded at "
        "sign-in. Rolling: `save_every_request=True`, `renew_interval` 60 s.",
        "",
        *table(head, rows),
        "",
        "Without rolling expiry a read writes nothing, signed in or not; with it, the "
        "renewal that happens anyway (at most once per `renew_interval`) is what moves "
        "last seen: no write is added for devices.",
    ]
    return Section(TITLE, lines, {"rounds": rounds, "requests": requests, "results": results})

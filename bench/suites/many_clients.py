"""Many sessions at once: N concurrent clients through uvicorn, each counting in its own
session; afterwards every session must hold exactly the writes its client saw succeed.
Requests/s, errors (any non-200 or transport error) and lost writes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..harness import Context, Section
from ..services import REDIS, Unavailable, uvicorn_server

TITLE = "Many clients through uvicorn"
# Plain http:// only; one context for every client, since httpx would otherwise build (and
# load CA certificates into) a new one per client: ~50 ms of CPU each, hundreds of times.
PLAIN_HTTP = ssl.create_default_context()
SECRET = "many-clients-secret-key-long-enough-00"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stores", default="sqlite,redis", help="comma-separated")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, help="seconds of load (10; quick 2)")


def make_app() -> Any:
    """The served app (``uvicorn --factory bench.suites.many_clients:make_app``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from asgi_sessions import SessionMiddleware, store_from_url

    async def login(request: Request) -> JSONResponse:
        session = await request.state.session
        await session.cycle_key()
        session["user"] = request.query_params["user"]
        session["count"] = 0
        return JSONResponse({"ok": True})

    async def increment(request: Request) -> JSONResponse:
        session = await request.state.session
        session["count"] += 1
        return JSONResponse({"count": session["count"]})

    async def read(request: Request) -> JSONResponse:
        return JSONResponse(dict(await request.state.session))

    store = store_from_url(os.environ["MANY_STORE_URL"])
    app = Starlette(
        routes=[Route("/login", login), Route("/incr", increment), Route("/read", read)]
    )
    return SessionMiddleware(app, secret_key=SECRET, store=store)


@dataclass
class Result:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    lost_writes: int = 0
    clients_counted: int = 0  # clients with at least one successful count
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def drive(base: str, clients: int, seconds: float) -> Result:
    """Run ``clients`` users for ``seconds``; each keeps its own cookie and counts."""
    result = Result()
    everyone_in = asyncio.Barrier(clients)

    async def user(number: int) -> None:
        # One client (one keep-alive connection) per user, like a browser: a single
        # shared httpx pool of hundreds of connections is itself the bottleneck.
        async with httpx.AsyncClient(base_url=base, timeout=30, verify=PLAIN_HTTP) as http:
            try:
                await http.get("/login", params={"user": f"u{number}"})
                # All log in first, then all count together for `seconds`.
                await everyone_in.wait()
                stop = time.monotonic() + seconds
                seen = 0
                while time.monotonic() < stop:
                    response = await http.get("/incr")
                    result.requests += 1
                    if response.status_code != 200:
                        result.errors.append(f"{response.status_code} {response.text[:80]}")
                        continue
                    seen += 1
                stored = (await http.get("/read")).json()
                if stored.get("user") != f"u{number}":
                    result.errors.append(f"user {number} read {stored!r}")
                result.lost_writes += max(0, seen - stored.get("count", 0))
                result.clients_counted += seen > 0
            except httpx.HTTPError as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                await everyone_in.abort()  # don't leave the others waiting for this one
            except asyncio.BrokenBarrierError:
                result.errors.append(f"user {number}: another client failed to log in")

    await asyncio.gather(*(user(n) for n in range(clients)))
    result.seconds = seconds
    return result


def serve_and_drive(store_url: str, clients: int, seconds: float) -> Result:
    """Serve the app with its sessions at ``store_url`` and drive it."""
    factory = "bench.suites.many_clients:make_app"
    with uvicorn_server(factory, {"MANY_STORE_URL": store_url}) as (base, _):
        return asyncio.run(drive(base, clients, seconds))


def run(ctx: Context, args: argparse.Namespace) -> Section:
    seconds = args.seconds or (2.0 if ctx.quick else 10.0)
    lines = [
        f"{args.clients} clients x {seconds:g} s, each with its own session and connection.",
        "",
        "| store | requests | requests/s | errors | lost writes |",
        "|---|---:|---:|---:|---:|",
    ]
    results = {}
    for store in args.stores.split(","):
        try:
            url = (
                ctx.services.url(REDIS)
                if store == "redis"
                else f"sqlite:///{ctx.tmpdir / 'many.sqlite3'}"
            )
        except Unavailable as exc:
            lines.append(f"| {store} | skipped: {exc} | | | |")
            continue
        r = results[store] = serve_and_drive(url, args.clients, seconds)
        lines.append(
            f"| {store} | {r.requests:,} | {r.per_second:,.0f} | {len(r.errors)} | "
            f"{r.lost_writes} |"
        )
        lines += [f"| | {error} | | | |" for error in r.errors[:3]]
    lines += ["", "Goal: 0 errors and 0 lost writes."]
    data = {
        store: {
            "requests": r.requests,
            "per_second": r.per_second,
            "errors": r.errors,
            "lost_writes": r.lost_writes,
        }
        for store, r in results.items()
    }
    return Section(TITLE, lines, data)

"""Many sessions at once: N concurrent clients through uvicorn, each counting in its own
session; afterwards every session must hold exactly the writes its client saw succeed.

    .venv/bin/python -m bench.many_clients --store sqlite --clients 200 --seconds 10
    .venv/bin/python -m bench.many_clients --store redis

Prints requests/s, errors (any non-200 or transport error) and lost writes. Loopback
only; starts its own redis-server unless REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.services import redis_server, uvicorn_server

SECRET = "many-clients-secret-key-long-enough-00"


def make_app() -> Any:
    """The served app (``uvicorn --factory bench.many_clients:make_app``)."""
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
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
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
            except httpx.HTTPError as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")
                everyone_in.abort()  # don't leave the others waiting for this one
            except asyncio.BrokenBarrierError:
                result.errors.append(f"user {number}: another client failed to log in")

    await asyncio.gather(*(user(n) for n in range(clients)))
    result.seconds = seconds
    return result


def run(store: str, clients: int, seconds: float) -> Result:
    """Serve the app on ``store`` ("sqlite" or "redis") and drive it."""
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as services:
        if store == "sqlite":
            url = f"sqlite:///{Path(tmp) / 'many.sqlite3'}"
        else:
            url = services.enter_context(redis_server())
        base, _ = services.enter_context(
            uvicorn_server("bench.many_clients:make_app", {"MANY_STORE_URL": url})
        )
        return asyncio.run(drive(base, clients, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    result = run(args.store, args.clients, args.seconds)
    print(
        f"{args.store}: {args.clients} clients x {args.seconds:.0f} s: "
        f"{result.requests} requests ({result.per_second:.0f}/s), "
        f"errors {len(result.errors)}, lost writes {result.lost_writes}"
    )
    for error in result.errors[:5]:
        print(f"  {error}")


if __name__ == "__main__":
    main()

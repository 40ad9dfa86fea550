"""Several uvicorn processes sharing one PostgreSQL database: concurrent writers to the
same sessions lose nothing.

    .venv/bin/python -m bench postgres --only processes   # 4 processes, 16 x 8 writers, 10 s

Used by that figure (writes/s) and by ``tests/test_postgres_processes.py`` (a fixed number
of writes each). Four uvicorn servers (one process each, on their own ports) serve the
same app on the same database. Each client logs in once; then its ``writers`` tasks write
to that ONE session at the same time, each its own key with increasing values, writer
``w`` through server ``w mod processes``: concurrent saves of one session come from
different processes. (Separate servers rather than ``uvicorn --workers 4``: the kernel
would pick the process, and here the test does, so every session is written from all of
them.) Afterwards every key must hold the last value its writer saw acknowledged:
anything else is a lost write. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.services import uvicorn_server

SECRET = "postgres-processes-secret-key-long-enough"
FACTORY = "bench.pg_processes:make_app"


def make_app() -> Any:
    """The served app (``uvicorn --factory bench.pg_processes:make_app``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from asgi_sessions import SessionMiddleware
    from asgi_sessions.stores.postgres import PostgresStore

    async def login(request: Request) -> JSONResponse:
        session = await request.state.session
        session["user"] = request.query_params["user"]
        return JSONResponse({"pid": os.getpid()})

    async def write(request: Request) -> JSONResponse:
        session = await request.state.session
        session[request.query_params["key"]] = int(request.query_params["value"])
        return JSONResponse({"pid": os.getpid()})

    async def read(request: Request) -> JSONResponse:
        return JSONResponse(dict(await request.state.session))

    async def pid(request: Request) -> JSONResponse:
        return JSONResponse({"pid": os.getpid()})

    store = PostgresStore(os.environ["PROCESSES_POSTGRES_URL"], max_size=8)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with store:
            yield

    app = Starlette(
        routes=[
            Route("/login", login),
            Route("/write", write),
            Route("/read", read),
            Route("/pid", pid),
        ],
        lifespan=lifespan,
    )
    return SessionMiddleware(app, secret_key=SECRET, store=store)


@dataclass
class Result:
    writes: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    lost_writes: int = 0
    idle_writers: int = 0
    """Writers that got no write through at all (the machine too busy, or a deadlock)."""
    pids: set[int] = field(default_factory=set)

    @property
    def per_second(self) -> float:
        return self.writes / self.seconds if self.seconds else 0.0


def _connection(base: str) -> httpx.AsyncClient:
    # verify=False: plain http on loopback, and loading the CA bundle per client is the
    # slowest part of building one.
    return httpx.AsyncClient(base_url=base, timeout=60, verify=False)  # noqa: S501


async def drive(
    bases: list[str], *, clients: int, writers: int, seconds: float, each: int | None = None
) -> Result:
    """Log every client in, then drive the writers for ``seconds`` (or until each has had
    ``each`` writes acknowledged), then check what every session holds."""
    result = Result()

    async def login(number: int) -> dict[str, str]:
        async with httpx.AsyncClient(base_url=bases[number % len(bases)], timeout=60) as http:
            response = await http.get("/login", params={"user": f"u{number}"})
            return {"cookie": f"session={response.cookies['session']}"}

    cookies = await asyncio.gather(*(login(n) for n in range(clients)))
    acknowledged: list[dict[str, int]] = [{} for _ in range(clients)]
    # One connection per writer, opened before the clock starts: building an httpx client
    # and connecting cost more CPU than a request, and would be counted against the store.
    # Writer w of a session goes through server w: one session, several processes.
    connections = {
        (n, w): _connection(bases[(n + w) % len(bases)])
        for n in range(clients)
        for w in range(writers)
    }
    async with contextlib.AsyncExitStack() as opened:
        for http in connections.values():
            await opened.enter_async_context(http)
        await asyncio.gather(*(http.get("/pid") for http in connections.values()))
        started = time.monotonic()
        stop = started + seconds

        async def writer(number: int, w: int) -> None:
            http, value = connections[(number, w)], 0
            while (value < each) if each is not None else (time.monotonic() < stop):
                value += 1
                response = await http.get(
                    "/write", params={"key": f"w{w}", "value": value}, headers=cookies[number]
                )
                if response.status_code != 200:
                    result.errors.append(f"{response.status_code} {response.text[:80]}")
                    continue
                result.writes += 1
                result.pids.add(response.json()["pid"])
                acknowledged[number][f"w{w}"] = value

        await asyncio.gather(*(writer(n, w) for n in range(clients) for w in range(writers)))
        result.seconds = time.monotonic() - started

    async with httpx.AsyncClient(base_url=bases[0], timeout=60) as http:
        for number in range(clients):
            stored = (await http.get("/read", headers=cookies[number])).json()
            if stored.get("user") != f"u{number}":
                result.errors.append(f"client {number} lost its login: {stored!r}")
            for key, value in acknowledged[number].items():
                result.lost_writes += stored.get(key) != value
            result.idle_writers += writers - len(acknowledged[number])
    return result


def run(
    dsn: str,
    *,
    processes: int,
    clients: int,
    writers: int,
    seconds: float = 10.0,
    each: int | None = None,
) -> Result:
    """Serve the app from ``processes`` uvicorn servers on ``dsn`` and drive them."""
    env = {"PROCESSES_POSTGRES_URL": dsn}
    with contextlib.ExitStack() as servers:
        bases = [servers.enter_context(uvicorn_server(FACTORY, env))[0] for _ in range(processes)]
        return asyncio.run(
            drive(bases, clients=clients, writers=writers, seconds=seconds, each=each)
        )

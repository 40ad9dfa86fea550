"""Several app machines on one store: uvicorn processes on 127.0.0.2, .3, .4, one user's
requests alternating between them, several writers per user at once.

    .venv/bin/python -m bench cluster --figures machines     # starts its own cluster

Each user logs in (the key rotates, the session gets an owner), then ``writers`` tasks
each set their own key (``w0``, ``w1``...) to 1, 2, 3... as fast as the servers answer,
every request to the next server in turn. Half the users log out while their writers
still run. Afterwards:

- lost writes: a key whose stored value is below the last one a 200 acknowledged;
- resurrections: a logged-out session that any server can still load.

Used by ``tests/test_redis_multi_process.py`` and ``python -m bench cluster``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.services import uvicorn_server

SECRET = "multi-process-secret-key-long-enough-000"
WORK = 0.005
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def make_app() -> Any:
    """The served app (``uvicorn --factory bench.multi_process:make_app``)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from asgi_sessions import SessionMiddleware, store_from_url

    async def login(request: Request) -> JSONResponse:
        session = await request.state.session
        session["user"] = request.query_params["user"]
        session.owner = request.query_params["user"]
        await session.cycle_key()
        return JSONResponse({"ok": True})

    async def put(request: Request) -> JSONResponse:
        session = await request.state.session
        session[request.query_params["key"]] = int(request.query_params["n"])
        # A view does some work between loading and saving: the window in which another
        # machine's logout can overtake this request (its save must then be refused).
        await asyncio.sleep(WORK)
        return JSONResponse({"ok": True})

    async def logout(request: Request) -> JSONResponse:
        await (await request.state.session).flush()
        return JSONResponse({"ok": True})

    async def read(request: Request) -> JSONResponse:
        return JSONResponse(dict(await request.state.session))

    store = store_from_url(os.environ["MULTI_STORE_URL"])
    app = Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/put", put, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/read", read),
        ]
    )
    return SessionMiddleware(app, secret_key=SECRET, store=store)


@dataclass
class Result:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    lost_writes: list[str] = field(default_factory=list)
    resurrections: list[str] = field(default_factory=list)
    refused_after_logout: int = 0
    """Saves that raced a logout and were refused (400): delete wins, as promised."""
    seconds: float = 0.0


@contextmanager
def serving(url: str) -> Iterator[list[str]]:
    """The app on every host of ``HOSTS``, against the store at ``url``."""
    with ExitStack() as stack:
        env = {"MULTI_STORE_URL": url}
        yield [
            stack.enter_context(uvicorn_server("bench.multi_process:make_app", env, host=host))[0]
            for host in HOSTS
        ]


async def drive(bases: list[str], *, users: int, writers: int, seconds: float) -> Result:
    result = Result()
    clients = [httpx.AsyncClient(base_url=base, timeout=30) for base in bases]
    turn = 0

    async def call(method: str, path: str, cookie: str | None, **params: Any) -> httpx.Response:
        nonlocal turn
        turn += 1
        client = clients[turn % len(clients)]  # alternate between the machines
        headers = {"cookie": f"session={cookie}"} if cookie else {}
        result.requests += 1
        return await client.request(method, path, params=params, headers=headers)

    async def user(number: int) -> None:
        name = f"user-{number}"
        response = await call("POST", "/login", None, user=name)
        if response.status_code != 200:
            result.errors.append(f"{name} login: {response.status_code}")
            return
        cookie = response.cookies["session"]
        logs_out = number % 2 == 1
        logged_out = asyncio.Event()
        acknowledged: dict[str, int] = {}

        async def writer(key: str) -> None:
            n = 0
            stop = time.monotonic() + seconds
            while time.monotonic() < stop:
                n += 1
                response = await call("POST", "/put", cookie, key=key, n=n)
                if response.status_code == 200 and not logged_out.is_set():
                    acknowledged[key] = n
                elif response.status_code == 400 and logs_out:
                    result.refused_after_logout += 1
                elif response.status_code != 200:
                    result.errors.append(f"{name} {key}={n}: {response.status_code}")

        async def logout() -> None:
            await asyncio.sleep(seconds / 2)
            response = await call("POST", "/logout", cookie)
            if response.status_code != 200:
                result.errors.append(f"{name} logout: {response.status_code}")
            logged_out.set()

        await asyncio.gather(
            *(writer(f"w{i}") for i in range(writers)), *([logout()] if logs_out else [])
        )
        # Every machine must now agree on what the session holds.
        for _ in range(len(clients)):
            stored = (await call("GET", "/read", cookie)).json()
            if logs_out:
                if stored.get("user") == name:
                    result.resurrections.append(f"{name} is back: {stored!r}")
            else:
                for key, n in acknowledged.items():
                    if stored.get(key, 0) < n:
                        result.lost_writes.append(f"{name} {key}: acknowledged {n}, {stored!r}")

    started = time.monotonic()
    try:
        await asyncio.gather(*(user(n) for n in range(users)))
    finally:
        for client in clients:
            await client.aclose()
    result.seconds = time.monotonic() - started
    return result


def run(url: str, *, users: int = 6, writers: int = 3, seconds: float = 2.0) -> Result:
    with serving(url) as bases:
        return asyncio.run(drive(bases, users=users, writers=writers, seconds=seconds))

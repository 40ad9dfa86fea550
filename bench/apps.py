"""The apps every timing suite serves, and the configurations that build them.

Every configuration serves the same trivial Starlette app with three endpoints:

- ``/untouched``: a session cookie is sent, the view never touches the session;
- ``/read``: the view reads one key of an existing session;
- ``/write``: the view changes one key of an existing session (without a cookie: the
  first write, which creates the session).

Floors (``raw-*``, :mod:`bench.floors`) are session-less apps doing the raw store I/O a
session costs; their ``/create`` is the first write's floor (one write, nothing read).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from . import floors
from .asgi import ASGIApp, call
from .floors import floor_app

SECRET = "bench-secret-key-0123456789abcdef0123456789abcdef"
ENDPOINTS = ("untouched", "read", "write")
MAX_AGE = 14 * 24 * 3600

# The session every configuration starts from (small, like a logged-in user's).
BASE_DATA: dict[str, Any] = {"user": "alice", "theme": "dark", "counter": "000000000000"}
# What bare and raw-floor configurations send as their (ignored) session cookie.
DUMMY_COOKIE = b"session=" + b"x" * 96


def session_data(size: int = 0) -> dict[str, Any]:
    """The base session, plus a ``blob`` of ``size`` bytes for the write-size sweep."""
    data = dict(BASE_DATA)
    if size:
        data["blob"] = "x" * size
    return data


_counter = itertools.count(1)


def next_value() -> str:
    """A fresh, same-length value for the key a write endpoint changes."""
    return f"{next(_counter):012d}"


# -- apps ------------------------------------------------------------------------------


def _ok(value: Any) -> Response:
    return PlainTextResponse(value if isinstance(value, str) else "?")


def session_app(style: str, middleware: Sequence[Middleware], data: dict[str, Any]) -> Starlette:
    """The trivial app, its views reaching the session the way ``style`` says.

    ``starlette``/``autoload``: ``request.session``; ``starsessions``: ``await
    load_session(request)`` first; ``ours``: ``await request.state.session``.
    """
    if style == "ours":

        async def get(request: Request) -> Any:
            return await request.state.session

    elif style == "starsessions":
        from starsessions import load_session

        async def get(request: Request) -> Any:
            await load_session(request)
            return request.session

    else:

        async def get(request: Request) -> Any:
            return request.session

    async def untouched(request: Request) -> Response:
        return PlainTextResponse("alice")

    async def read(request: Request) -> Response:
        session = await get(request)
        return _ok(session.get("user"))

    async def write(request: Request) -> Response:
        session = await get(request)
        session["counter"] = next_value()
        return PlainTextResponse("alice")

    async def seed(request: Request) -> Response:
        session = await get(request)
        session.update(data)
        return PlainTextResponse("seeded")

    routes = [
        Route("/untouched", untouched),
        Route("/read", read),
        Route("/write", write),
        Route("/seed", seed),
    ]
    return Starlette(routes=routes, middleware=list(middleware))


async def _noop() -> bool:
    return True


# -- configurations ------------------------------------------------------------------------


@dataclass
class Env:
    """What configurations share: the servers' URLs and a scratch directory."""

    redis_url: str
    tmpdir: str
    postgres_url: str = ""


@dataclass
class Built:
    app: ASGIApp
    cookie: bytes | None
    closers: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def aclose(self) -> None:
        for closer in reversed(self.closers):
            await closer()


class Skip(Exception):
    """The configuration cannot run yet (a store module missing); the reason says why."""


@dataclass(frozen=True)
class Config:
    name: str
    label: str
    size: int = 0  # session blob bytes (write-size sweep)
    endpoints: tuple[str, ...] = ENDPOINTS

    @property
    def needs_redis(self) -> bool:
        return "redis" in self.name

    @property
    def needs_postgres(self) -> bool:
        return "postgres" in self.name


async def _seed(app: ASGIApp) -> bytes:
    reply = await call(app, "/seed")
    cookie = reply.set_cookie()
    if reply.status != 200 or cookie is None:
        raise RuntimeError(f"seeding answered {reply.status} without a session cookie")
    return cookie


def _ours_store(kind: str, env: Env, name: str) -> tuple[Any, list[Callable[[], Awaitable[Any]]]]:
    try:
        if kind == "memory":
            from asgi_sessions.stores.memory import MemoryStore

            store: Any = MemoryStore()
        elif kind == "sqlite":
            from asgi_sessions.stores.sqlite import SQLiteStore

            store = SQLiteStore(os.path.join(env.tmpdir, f"{name}.sqlite3"))
        elif kind == "redis":
            from asgi_sessions.stores.redis import RedisStore

            store = RedisStore.from_url(env.redis_url, prefix=f"bench:{name}:")
        elif kind == "cookie":
            from asgi_sessions.stores.cookie import CookieStore

            store = CookieStore()
        elif kind == "postgres":
            from asgi_sessions.stores.postgres import PostgresStore

            store = PostgresStore(env.postgres_url, table=f"bench_{name.replace('-', '_')}")
        else:
            raise ValueError(kind)
    except ImportError as exc:
        raise Skip(f"asgi_sessions.stores.{kind} is not importable yet ({exc})") from exc
    return store, [store.aclose]


async def build(config: Config, env: Env) -> Built:
    """Make the configuration's app, seed its session, return it with the cookie to send."""
    name = config.name
    data = session_data(config.size)
    family, _, variant = name.partition("-")
    variant = variant.split("-")[0] if variant else ""

    if name == "bare":
        return Built(floor_app(_noop, _noop), DUMMY_COOKIE)

    if name == "starlette":
        from starlette.middleware.sessions import SessionMiddleware as StarletteSessions

        mw = [Middleware(StarletteSessions, secret_key=SECRET, max_age=MAX_AGE)]
        app = session_app("starlette", mw, data)
        return Built(app, await _seed(app))

    if family == "starsessions":
        from starsessions import SessionAutoloadMiddleware, SessionMiddleware

        closers: list[Callable[[], Awaitable[Any]]] = []
        if variant == "memory":
            from starsessions.stores.memory import InMemoryStore

            store: Any = InMemoryStore()
        else:
            from redis.asyncio import Redis
            from starsessions.stores.redis import RedisStore as StarRedisStore

            client = Redis.from_url(env.redis_url)
            closers.append(client.aclose)
            store = StarRedisStore(connection=client, prefix=f"bench:{name}:")
        autoload = name.endswith("-autoload")
        mw = [
            Middleware(
                SessionMiddleware,
                store=store,
                lifetime=MAX_AGE,
                cookie_https_only=False,
            )
        ]
        if autoload:
            mw.append(Middleware(SessionAutoloadMiddleware))
        app = session_app("autoload" if autoload else "starsessions", mw, data)
        return Built(app, await _seed(app), closers)

    if family == "ours":
        from asgi_sessions import SessionMiddleware as Ours

        store, closers = _ours_store(variant, env, name)
        autoload = name.endswith("-autoload")
        mw = [Middleware(Ours, secret_key=SECRET, store=store, max_age=MAX_AGE, autoload=autoload)]
        app = session_app("ours", mw, data)
        return Built(app, await _seed(app), closers)

    if family == "raw":
        value = json.dumps(data)
        if variant == "redis":
            app, closers = await floors.raw_redis(env.redis_url, value)
        elif variant == "sqlite":
            app, closers = await floors.raw_sqlite(os.path.join(env.tmpdir, "raw.sqlite3"), value)
        elif variant == "postgres":
            app, closers = await floors.raw_postgres(env.postgres_url, value)
        else:
            raise ValueError(f"unknown configuration {name!r}")
        return Built(app, DUMMY_COOKIE, closers)

    raise ValueError(f"unknown configuration {name!r}")


# Interleaved in this order each round.
CONFIGS: list[Config] = [
    Config("bare", "bare app (no middleware)"),
    Config("starlette", "Starlette SessionMiddleware (signed cookie)"),
    Config("starsessions-memory", "starsessions InMemoryStore, lazy load_session"),
    Config(
        "starsessions-memory-autoload", "starsessions InMemoryStore + SessionAutoloadMiddleware"
    ),
    Config("starsessions-redis", "starsessions RedisStore, lazy load_session"),
    Config("starsessions-redis-autoload", "starsessions RedisStore + SessionAutoloadMiddleware"),
    Config("raw-redis", "floor: redis-py GET / GET+SET"),
    Config("raw-sqlite", "floor: aiosqlite SELECT / SELECT+UPSERT"),
    Config("ours-memory", "asgi_sessions MemoryStore"),
    Config("ours-memory-autoload", "asgi_sessions MemoryStore, autoload=True"),
    Config("ours-sqlite", "asgi_sessions SQLiteStore (tmp file)"),
    Config("ours-redis", "asgi_sessions RedisStore.from_url"),
    Config("ours-cookie", "asgi_sessions CookieStore"),
]

# Not in the in-process comparison: the latency suite's PostgreSQL sides (the postgres
# suite compares the store with raw asyncpg without the app around it).
POSTGRES_CONFIGS: list[Config] = [
    Config("raw-postgres", "floor: asyncpg SELECT / SELECT + upsert"),
    Config("ours-postgres", "asgi_sessions PostgresStore"),
]

SWEEP_SIZES = (1_000, 10_000, 100_000)
SWEEP: list[Config] = [
    Config(f"{family}-{size // 1000}k", f"{family}, {size // 1000} KB session", size, ("write",))
    for family in ("ours-sqlite", "ours-redis", "starsessions-redis")
    for size in SWEEP_SIZES
]


def config(name: str) -> Config:
    """The configuration called ``name``."""
    for candidate in (*CONFIGS, *SWEEP, *POSTGRES_CONFIGS):
        if candidate.name == name:
            return candidate
    raise SystemExit(f"no configuration {name!r}; known: {', '.join(c.name for c in CONFIGS)}")

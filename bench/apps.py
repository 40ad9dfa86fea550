"""The apps every timing suite serves, the configurations that build them, and the floors.

Every configuration serves the same trivial Starlette app with three endpoints:

- ``/untouched``: a session cookie is sent, the view never touches the session;
- ``/read``: the view reads one key of an existing session;
- ``/write``: the view changes one key of an existing session (without a cookie: the
  first write, which creates the session).

Floors (``raw-*``) are session-less apps doing only the raw store I/O a session costs:
``/read`` reads a value the size of the session's JSON (one GET, one SELECT by primary
key), ``/write`` reads it and writes a changed value of the same size back (SQLite commits
an upsert of an unchanged row without writing a page, so a floor that wrote the same
value back would do less than any session write), ``/create`` writes it only (the first
write's floor). Each floor's client is set up as the matching store's (the same pragmas,
the same pool settings), so a floor pays what the store pays for the I/O and nothing
else: a fixed key, no cookie parsing, no signing, no decoding.

And what suites share below the app: a simulated clock, a store that counts the writes
reaching it, and a store write built as the middleware builds one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from .asgi import ASGIApp, call

SECRET = "bench-secret-key-0123456789abcdef0123456789abcdef"
ENDPOINTS = ("untouched", "read", "write")
MAX_AGE = 14 * 24 * 3600

# The session every configuration starts from (small, like a logged-in user's).
BASE_DATA: dict[str, Any] = {"user": "alice", "theme": "dark", "counter": "000000000000"}
# What bare and raw-floor configurations send as their (ignored) session cookie.
DUMMY_COOKIE = b"session=" + b"x" * 96
Closers = list[Callable[[], Awaitable[Any]]]


def session_data(size: int = 0) -> dict[str, Any]:
    """The base session, plus a ``blob`` of ``size`` bytes for the write-size sweep."""
    return {**BASE_DATA, "blob": "x" * size} if size else dict(BASE_DATA)


_counter = itertools.count(1)


def next_value() -> str:
    """A fresh, same-length value for the key a write endpoint changes."""
    return f"{next(_counter):012d}"


class Clock:
    """A simulated clock for the stores' ``clock=``: suites move ``now`` themselves."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def counting(store: Any) -> Any:
    """``store``, counting in ``store.writes`` the writes that reach it (creates, saves,
    renewals, rotations)."""
    store.writes = 0

    def counted(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            store.writes += 1
            return await method(*args, **kwargs)

        return call

    for name in ("write", "move"):  # starsessions' stores have no move
        if hasattr(store, name):
            setattr(store, name, counted(getattr(store, name)))
    return store


def change(data: dict[str, str], *, create: bool) -> Any:
    """A store write of ``data`` (encoded values) now, as the middleware makes one: a new
    record if ``create``. The one place the bench reaches below the public API for a write."""
    from asgi_sessions.stores.base import SessionWrite

    now = time.time()
    return SessionWrite(
        set=data, deleted=frozenset(), replace=False, create=create, now=now,
        default_expires_at=now + 3600, expires_cap=None, created_at=now, owner=None,
        owner_changed=False,
    )  # fmt: skip


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
        return _ok((await get(request)).get("user"))

    async def write(request: Request) -> Response:
        (await get(request))["counter"] = next_value()
        return PlainTextResponse("alice")

    async def seed(request: Request) -> Response:
        (await get(request)).update(data)
        return PlainTextResponse("seeded")

    routes = [Route(f"/{view.__name__}", view) for view in (untouched, read, write, seed)]
    return Starlette(routes=routes, middleware=list(middleware))


def floor_app(
    read_one: Callable[[], Awaitable[Any]], write_one: Callable[[], Awaitable[Any]]
) -> Starlette:
    """A session-less app whose read/write views do the raw store I/O a session costs."""

    async def untouched(request: Request) -> Response:
        return PlainTextResponse("alice")

    async def read(request: Request) -> Response:
        return PlainTextResponse("alice" if await read_one() else "?")

    async def write(request: Request) -> Response:
        value = await read_one()
        await write_one()
        return PlainTextResponse("alice" if value else "?")

    async def create(request: Request) -> Response:
        await write_one()
        return PlainTextResponse("alice")

    return Starlette(routes=[Route(f"/{v.__name__}", v) for v in (untouched, read, write, create)])


def changed(value: str) -> str:
    """``value`` with its first 12 characters replaced by a fresh counter: the same size,
    never the same text (a floor stores opaque text, so it need not stay JSON)."""
    return next_value() + value[12:]


async def raw_redis(url: str, value: str) -> tuple[Starlette, Closers]:
    """redis-py: ``GET`` / ``GET`` + ``SET`` / ``SET``."""
    from redis.asyncio import Redis

    client, key = Redis.from_url(url), "bench:raw-redis:session"
    await client.set(key, value, ex=MAX_AGE)

    async def put() -> Any:
        return await client.set(key, changed(value), ex=MAX_AGE)

    return floor_app(lambda: client.get(key), put), [client.aclose]


async def raw_sqlite(path: str, value: str) -> tuple[Starlette, Closers]:
    """aiosqlite on one open connection: ``SELECT`` by primary key / ``SELECT`` + ``UPSERT``."""
    import aiosqlite

    db = await aiosqlite.connect(path, isolation_level=None)
    # The pragmas SQLiteStore uses, so the floor pays what the store pays.
    await db.execute_fetchall("PRAGMA journal_mode = WAL")
    await db.execute_fetchall("PRAGMA synchronous = NORMAL")
    await db.execute_fetchall(
        "CREATE TABLE IF NOT EXISTS sessions (id TEXT PRIMARY KEY, data TEXT NOT NULL)"
    )
    key = "k" * 64
    upsert = (
        "INSERT INTO sessions (id, data) VALUES (?, ?) "
        "ON CONFLICT (id) DO UPDATE SET data = excluded.data"
    )
    await db.execute_fetchall(upsert, (key, value))

    async def select() -> Any:
        return list(await db.execute_fetchall("SELECT data FROM sessions WHERE id = ?", (key,)))

    async def save() -> Any:
        return await db.execute_fetchall(upsert, (key, changed(value)))

    return floor_app(select, save), [db.close]


async def raw_postgres(dsn: str, value: str) -> tuple[Starlette, Closers]:
    """asyncpg, a pool set up as PostgresStore's: one ``SELECT`` by primary key (live
    records only) / that ``SELECT`` + one upsert / the upsert: what a minimal store issues."""
    from .pg import store_like_pool

    pool = await store_like_pool(dsn)
    await pool.execute(
        "CREATE TABLE IF NOT EXISTS bench_raw_sessions "
        "(id bytea PRIMARY KEY, data text NOT NULL, expires_at float8 NOT NULL)"
    )
    key = hashlib.sha256(b"raw-postgres").digest()
    upsert = (
        "INSERT INTO bench_raw_sessions VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
        "SET data = excluded.data, expires_at = excluded.expires_at"
    )
    await pool.execute(upsert, key, value, time.time() + MAX_AGE)

    async def select() -> Any:
        return await pool.fetchval(
            "SELECT data FROM bench_raw_sessions WHERE id = $1 AND expires_at > $2",
            key, time.time(),
        )  # fmt: skip

    async def save() -> Any:
        return await pool.execute(upsert, key, changed(value), time.time() + MAX_AGE)

    return floor_app(select, save), [pool.close]


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
    closers: Closers = field(default_factory=list)

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


async def seed(app: ASGIApp, path: str = "/seed", **extra: Any) -> bytes:
    """The session cookie of a request to ``path`` that stores a session."""
    reply = await call(app, path, **extra)
    cookie = reply.set_cookie()
    if reply.status != 200 or cookie is None:
        raise RuntimeError(f"seeding answered {reply.status} without a session cookie")
    return cookie


def _ours_store(kind: str, env: Env, name: str) -> Any:
    from asgi_sessions import store_from_url

    urls = {"memory": "memory://", "cookie": "cookie://", "redis": env.redis_url}
    urls |= {"sqlite": f"sqlite:///{env.tmpdir}/{name}.sqlite3", "postgres": env.postgres_url}
    table = f"bench_{name.replace('-', '_')}"
    options = {"redis": {"prefix": f"bench:{name}:"}, "postgres": {"table": table}}
    try:
        return store_from_url(urls[kind], **options.get(kind, {}))
    except ImportError as exc:
        raise Skip(f"asgi_sessions.stores.{kind} is not importable yet ({exc})") from exc


async def build(config: Config, env: Env) -> Built:
    """Make the configuration's app, seed its session, return it with the cookie to send."""
    name, data = config.name, session_data(config.size)
    family, _, variant = name.partition("-")
    variant = variant.split("-")[0]
    autoload = name.endswith("-autoload")

    if name == "bare":
        return Built(floor_app(_noop, _noop), DUMMY_COOKIE)
    if name == "starlette":
        from starlette.middleware.sessions import SessionMiddleware as StarletteSessions

        mw = [Middleware(StarletteSessions, secret_key=SECRET, max_age=MAX_AGE)]
        app = session_app("starlette", mw, data)
        return Built(app, await seed(app))
    if family == "starsessions":
        from starsessions import SessionAutoloadMiddleware, SessionMiddleware

        closers: Closers = []
        if variant == "memory":
            from starsessions.stores.memory import InMemoryStore

            store: Any = InMemoryStore()
        else:
            from redis.asyncio import Redis
            from starsessions.stores.redis import RedisStore as StarRedisStore

            client = Redis.from_url(env.redis_url)
            closers.append(client.aclose)
            store = StarRedisStore(connection=client, prefix=f"bench:{name}:")
        mw = [Middleware(SessionMiddleware, store=store, lifetime=MAX_AGE, cookie_https_only=False)]
        mw += [Middleware(SessionAutoloadMiddleware)] if autoload else []
        app = session_app("autoload" if autoload else "starsessions", mw, data)
        return Built(app, await seed(app), closers)
    if family == "ours":
        from asgi_sessions import SessionMiddleware as Ours

        store = _ours_store(variant, env, name)
        mw = [Middleware(Ours, secret_key=SECRET, store=store, max_age=MAX_AGE, autoload=autoload)]
        app = session_app("ours", mw, data)
        return Built(app, await seed(app), [store.aclose])
    floors = {
        "raw-redis": lambda value: raw_redis(env.redis_url, value),
        "raw-sqlite": lambda value: raw_sqlite(os.path.join(env.tmpdir, "raw.sqlite3"), value),
        "raw-postgres": lambda value: raw_postgres(env.postgres_url, value),
    }
    if name not in floors:
        raise ValueError(f"unknown configuration {name!r}")
    app, closers = await floors[name](json.dumps(data))
    return Built(app, DUMMY_COOKIE, closers)


async def _noop() -> bool:
    return True


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

# Not in the in-process comparison by default: the latency suite's PostgreSQL sides.
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

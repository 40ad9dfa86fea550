"""Apps served by uvicorn, and the clients that load them.

- ``config_app``: one configuration of :mod:`bench.apps` (``BENCH_CONFIG``), built at
  startup, its seeded cookie written to ``BENCH_COOKIE_FILE``; :func:`load` drives it
  from raw keep-alive sockets (the ``http`` and ``sqlite-workers`` suites).
- ``session_app``: an app on the store ``BENCH_STORE_URL`` names (login, write one key,
  logout, read); :func:`run_writers` serves it from several uvicorn processes and drives
  many users with several writers each (``many-clients``, ``postgres --only processes``,
  ``cluster --figures machines``, and the tests that run those briefly).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import statistics
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .harness import log
from .services import uvicorn_server

SECRET = "served-secret-key-that-is-long-enough-000"
# Plain http:// only; one context for every client, since httpx would otherwise build (and
# load CA certificates into) a new one per client: ~50 ms of CPU each, hundreds of times.
PLAIN_HTTP = ssl.create_default_context()


def config_app() -> Any:
    """``uvicorn --factory bench.served:config_app``: the configuration BENCH_CONFIG names,
    on the files in BENCH_TMPDIR (every process serving a configuration shares them).

    Lifespan startup builds it (seeding its session) and writes the cookie to send to
    BENCH_COOKIE_FILE. An exception answers 500 with its text, so that a client can count
    "database is locked".
    """
    from .apps import Built, Env, build, config

    env = Env(redis_url=os.environ.get("BENCH_REDIS_URL", ""), tmpdir=os.environ["BENCH_TMPDIR"])
    built: list[Built] = []

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                built.append(await build(config(os.environ["BENCH_CONFIG"]), env))
                cookie = Path(os.environ["BENCH_COOKIE_FILE"])
                cookie.with_suffix(".tmp").write_bytes(built[0].cookie or b"")
                cookie.with_suffix(".tmp").replace(cookie)
                await send({"type": "lifespan.startup.complete"})
            await built[0].aclose()
            return await send({"type": "lifespan.shutdown.complete"})
        started = False

        async def tracked(message: dict[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await built[0].app(scope, receive, tracked)
        except Exception as exc:  # counted by the client, never hidden
            if started:
                raise
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": f"{exc!r}".encode()})

    return asgi


def serve_config(
    stack: contextlib.ExitStack, name: str, tmpdir: Path, cookie: Path, redis_url: str = ""
) -> tuple[int, bytes]:
    """Serve configuration ``name`` until ``stack`` closes: (port, the cookie to send)."""
    env = {"CONFIG": name, "REDIS_URL": redis_url, "TMPDIR": tmpdir, "COOKIE_FILE": cookie}
    env = {f"BENCH_{key}": str(value) for key, value in env.items()}
    base, _ = stack.enter_context(uvicorn_server("bench.served:config_app", env))
    return int(base.rsplit(":", 1)[1]), cookie.read_bytes()


@dataclass
class Load:
    """One cell's load: requests/s, each request's seconds, and the failures."""

    per_second: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    locked: int = 0  # failures that said "database is locked"
    samples: list[str] = field(default_factory=list)  # the first few failures

    @property
    def p99_ms(self) -> float:
        return statistics.quantiles(self.latencies, n=100)[98] * 1000


async def load(
    servers: Sequence[tuple[int, bytes]], path: str, clients: int, seconds: float
) -> Load:
    """``clients`` keep-alive connections spread over ``servers`` (port, cookie), one request
    in flight each, for ``seconds``, after one untimed request on each."""
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench/1\r\n".encode()
        + (b"Cookie: " + cookie + b"\r\n" if cookie else b"")
        + b"\r\n"
        for _, cookie in servers
    ]
    conns = []
    for i in range(clients):
        reader, writer = await asyncio.open_connection("127.0.0.1", servers[i % len(servers)][0])
        conns.append((reader, writer, requests[i % len(servers)]))
    loop = asyncio.get_running_loop()
    cell, counted = Load(), [False]

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> None:
        start = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        at = head.lower().find(b"content-length:")
        body = await reader.readexactly(
            int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
        )
        if not counted[0]:
            return
        cell.latencies.append(time.perf_counter() - start)
        if head[9:12] != b"200":
            cell.errors += 1
            cell.locked += b"locked" in body
            if len(cell.samples) < 3:
                cell.samples.append(f"{head[9:12].decode()} {body[:100].decode(errors='replace')}")

    async def worker(i: int, stop_at: float) -> None:
        while loop.time() < stop_at:
            await one(*conns[i])

    for conn in conns:
        await one(*conn)
    counted[0] = True
    started = loop.time()
    await asyncio.gather(*(worker(i, started + seconds) for i in range(clients)))
    cell.per_second = len(cell.latencies) / (loop.time() - started)
    for _, writer, _ in conns:
        writer.close()
    return cell


def load_configs(
    names: Sequence[str],
    endpoints: Sequence[str],
    tmpdir: Path,
    *,
    workers: int,
    clients: int,
    seconds: float,
    rounds: int,
    redis_url: str = "",
) -> tuple[dict[str, dict[str, list[Load]]], list[float]]:
    """Serve each configuration from ``workers`` uvicorn processes (sharing its files, all
    started up front) and :func:`load` each endpoint round by round, the configurations
    alternating order, after a warm-up round: each round's :class:`Load` per configuration
    and endpoint, and the 1-minute load average at each round's start."""
    cells: dict[str, dict[str, list[Load]]] = {n: {e: [] for e in endpoints} for n in names}
    loads: list[float] = []
    with contextlib.ExitStack() as stack:
        servers = {}
        for name in names:  # a configuration's processes one by one: no race for its files
            (shared := tmpdir / f"served-{name}").mkdir(exist_ok=True)
            cookie = shared / "cookie"
            serve = (serve_config(stack, name, shared, cookie, redis_url) for _ in range(workers))
            servers[name] = list(serve)
        log(f"  {len(names)} x {workers} uvicorn servers, {rounds} rounds x {seconds:g} s a cell")

        async def drive() -> None:
            for number in range(-1, rounds):  # round -1 warms up: first requests, pools
                loads.append(os.getloadavg()[0])
                for name in names if number % 2 else names[::-1]:
                    for endpoint in endpoints:
                        length = seconds if number >= 0 else 0.3
                        cell = await load(servers[name], f"/{endpoint}", clients, length)
                        cells[name][endpoint] += [cell] if number >= 0 else []

        asyncio.run(drive())
    return cells, loads[1:]


# -- many users on a real store ----------------------------------------------------------


def session_app() -> Any:
    """``uvicorn --factory bench.served:session_app``: :func:`make_session_app` on the store
    BENCH_STORE_URL names, with BENCH_MAX_AGE, BENCH_PURGE_EVERY and BENCH_WORK."""
    from asgi_sessions import store_from_url

    store = store_from_url(os.environ["BENCH_STORE_URL"])
    options = {k: float(os.environ.get(f"BENCH_{k.upper()}", 0)) for k in ("purge_every", "work")}
    max_age = int(os.environ.get("BENCH_MAX_AGE", 14 * 24 * 3600))
    return make_session_app(store, max_age=max_age, **options)


def make_session_app(
    store: Any, *, max_age: int = 14 * 24 * 3600, purge_every: float = 0, work: float = 0
) -> Any:
    """An app of ``/`` (no session), ``/login?user=U`` (the session's user; the key
    rotates; ``&owner=1``: the user owns the session), ``/write?key=K`` (one more write of
    K counted; ``&value=V``: K set to V), ``/logout`` and ``/read``. With ``purge_every``,
    ``clear_expired()`` runs that often while it is served; ``work`` is how long a write's
    view waits between load and save."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from asgi_sessions import SessionMiddleware

    async def anonymous(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def login(request: Request) -> JSONResponse:
        session = await request.state.session
        session["user"] = request.query_params["user"]
        if "owner" in request.query_params:
            session.owner = session["user"]  # the key rotates with the owner
        else:
            await session.cycle_key()
        return JSONResponse({"pid": os.getpid()})

    async def write(request: Request) -> JSONResponse:
        session, key = await request.state.session, request.query_params["key"]
        session[key] = request.query_params.get("value") or session.get(key, 0) + 1
        # Work between load and save: the window in which another machine's logout can
        # overtake this request (its save must then be refused).
        await asyncio.sleep(work)
        return JSONResponse({"pid": os.getpid(), key: session[key]})

    async def logout(request: Request) -> JSONResponse:
        await (await request.state.session).flush()
        return JSONResponse({"pid": os.getpid()})

    async def read(request: Request) -> JSONResponse:
        return JSONResponse(dict(await request.state.session))

    async def purge() -> None:
        while True:
            await asyncio.sleep(purge_every)
            try:
                await store.clear_expired()
            except Exception as exc:  # keep purging
                print(f"clear_expired failed: {exc}", file=sys.stderr, flush=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with store:
            task = asyncio.create_task(purge()) if purge_every else None
            yield
            if task:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    routes = [
        Route("/", anonymous),
        *(Route(f"/{v.__name__}", v) for v in (login, write, logout, read)),
    ]
    # Inside Starlette's error handling, so that a store outage answers 503, not 500.
    mw = Middleware(SessionMiddleware, secret_key=SECRET, store=store, max_age=max_age)
    return Starlette(routes=routes, middleware=[mw], lifespan=lifespan)


@contextlib.contextmanager
def serving(store_url: str, hosts: Sequence[str], **env: float) -> Iterator[list[str]]:
    """``session_app`` on ``store_url`` from one uvicorn process per host (loopback
    addresses: 127.0.0.2 stands for another machine); their base URLs."""
    environ = {f"BENCH_{k.upper()}": str(v) for k, v in {"store_url": store_url, **env}.items()}
    with contextlib.ExitStack() as stack:
        yield [
            stack.enter_context(uvicorn_server("bench.served:session_app", environ, host=h))[0]
            for h in hosts
        ]


@dataclass
class Result:
    requests: int = 0
    writes: int = 0  # acknowledged (200)
    errors: list[str] = field(default_factory=list)
    lost_writes: int = 0
    """Acknowledged writes a session does not count afterwards, on some server."""
    resurrections: list[str] = field(default_factory=list)
    """Logged-out sessions that a server can still load."""
    refused_after_logout: int = 0
    """Writes that raced their user's logout and were refused (400): delete wins."""
    idle_writers: int = 0
    """Writers that got no write through at all (the machine too busy, or a deadlock)."""
    clients_counted: int = 0  # users (not logged out) with an acknowledged write
    pids: set[int] = field(default_factory=set)  # the processes that acknowledged writes
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.writes / self.seconds if self.seconds else 0.0


async def drive(
    bases: Sequence[str],
    *,
    users: int,
    writers: int,
    seconds: float = 10.0,
    each: int | None = None,
    logouts: bool = False,
    owners: bool = False,
) -> Result:
    """Log every user in, then run its ``writers`` for ``seconds`` (or ``each`` writes
    each): writer ``w`` of user ``u`` counts writes of key ``w{w}``, through server ``(u +
    w) mod len(bases)``, so one session is written from several processes at once. With
    ``logouts``, every other user logs out halfway while its writers run; with ``owners``,
    each user owns its session. Afterwards every server is asked what every session holds."""
    result, n = Result(), len(bases)

    def client(base: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base, timeout=60, verify=PLAIN_HTTP)

    async def get(http: httpx.AsyncClient, path: str, cookie: str, **params: Any) -> Any:
        result.requests += 1
        headers = {"cookie": f"session={cookie}"} if cookie else {}
        return await http.get(path, params=params, headers=headers)

    async with contextlib.AsyncExitStack() as stack:
        servers = [await stack.enter_async_context(client(base)) for base in bases]
        owner = {"owner": 1} if owners else {}
        logins = [get(servers[u % n], "/login", "", user=f"u{u}", **owner) for u in range(users)]
        logins = await asyncio.gather(*logins)
        cookies = [r.cookies.get("session", "") for r in logins]
        result.errors += [
            f"u{u} login: {r.status_code}" for u, r in enumerate(logins) if not cookies[u]
        ]
        # One connection per writer, opened before the clock starts (like a browser's; and
        # building an httpx client and connecting cost more CPU than a request).
        conns = {
            (u, w): await stack.enter_async_context(client(bases[(u + w) % n]))
            for u in range(users) if cookies[u] for w in range(writers)
        }  # fmt: skip
        await asyncio.gather(*(http.get("/") for http in conns.values()))
        seen = [{f"w{w}": 0 for w in range(writers)} for _ in range(users)]
        out = [asyncio.Event() for _ in range(users)]
        started = time.monotonic()

        async def writer(u: int, w: int) -> None:
            attempts = 0
            while (attempts < each) if each is not None else time.monotonic() < started + seconds:
                attempts += 1
                try:
                    response = await get(conns[u, w], "/write", cookies[u], key=f"w{w}")
                except httpx.HTTPError as exc:
                    result.errors.append(f"u{u} w{w}: {exc!r}")
                    continue
                if response.status_code == 200:
                    result.writes += 1
                    result.pids.add(response.json()["pid"])
                    seen[u][f"w{w}"] += not out[u].is_set()
                elif response.status_code == 400 and logouts and u % 2:
                    result.refused_after_logout += 1
                else:
                    result.errors.append(f"u{u} w{w}: {response.status_code} {response.text[:80]}")

        async def logout(u: int) -> None:
            await asyncio.sleep(seconds / 2)
            response = await get(servers[u % n], "/logout", cookies[u])
            if response.status_code != 200:
                result.errors.append(f"u{u} logout: {response.status_code}")
            out[u].set()

        await asyncio.gather(
            *(writer(u, w) for u, w in conns),
            *(logout(u) for u in range(1, users, 2) if logouts and cookies[u]),
        )
        result.seconds = time.monotonic() - started
        lost: dict[tuple[int, str], int] = {}
        for u in (u for u in range(users) if cookies[u]):
            for http in servers:  # every machine must agree on what the session holds
                stored = (await get(http, "/read", cookies[u])).json()
                if out[u].is_set():
                    if stored.get("user") == f"u{u}":
                        result.resurrections.append(f"u{u} is back: {stored!r}")
                    continue
                if stored.get("user") != f"u{u}":
                    result.errors.append(f"u{u} lost its login: {stored!r}")
                for key, count in seen[u].items():
                    lost[u, key] = max(lost.get((u, key), 0), count - stored.get(key, 0))
            if not out[u].is_set():
                result.idle_writers += sum(not count for count in seen[u].values())
                result.clients_counted += any(seen[u].values())
    result.lost_writes = sum(lost.values())
    return result


def run_writers(
    store_url: str, *, hosts: Sequence[str], work: float = 0.0, **options: Any
) -> Result:
    """Serve ``session_app`` on ``store_url`` from a uvicorn process per host, and
    :func:`drive` it (``options``: users, writers, seconds, each, logouts, owners)."""
    with serving(store_url, hosts, work=work) as bases:
        return asyncio.run(drive(bases, **options))

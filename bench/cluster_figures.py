"""RedisStore on one server, on a Redis Cluster and behind Sentinel: the figures.

    .venv/bin/python -m bench.cluster_figures              # everything (~2 min)
    .venv/bin/python -m bench.cluster_figures spread       # slot spread, no server needed
    .venv/bin/python -m bench.cluster_figures latency      # load/save/request, each topology
    .venv/bin/python -m bench.cluster_figures round-trips  # per request kind, each topology
    .venv/bin/python -m bench.cluster_figures failover     # the windows, cluster and Sentinel
    .venv/bin/python -m bench.cluster_figures machines     # 3 uvicorn machines on a cluster

Servers are started here on free loopback ports with the test suite's own classes
(``tests/redis_server.py``, ``tests/redis_cluster.py``): one server, a cluster of
3 masters + 3 replicas, 1 master + 1 replica + 3 sentinels.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio.connection import AbstractConnection
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from asgi_sessions import SessionMiddleware, store_from_url
from asgi_sessions.stores.base import SessionWrite
from asgi_sessions.stores.redis import RedisStore
from asgi_sessions.stores.redis_layout import ClusterLayout, mint_key, owner_tag, random_tag
from bench import failover, multi_process

PREFIX = "asgi_sessions:"
SECRET = "cluster-figures-secret-key-long-enough-0"
ROUNDS, OPS = 9, 200
Op = Callable[[], Awaitable[Any]]


# -- slot spread ------------------------------------------------------------------------


def spread(slots: Counter[int]) -> str:
    per_slot = sorted(slots.values())
    return (
        f"{len(slots):,} of {REDIS_CLUSTER_HASH_SLOTS:,} slots; sessions per used slot: "
        f"median {per_slot[len(per_slot) // 2]}, max {per_slot[-1]}"
    )


def slot_spread(count: int) -> dict[str, Counter[int]]:
    """The slots of ``count`` sessions minted as the store mints them, in three populations."""
    layout = ClusterLayout(PREFIX)
    slot_key = secrets.token_bytes(32)

    def slot(key: str) -> int:
        return key_slot(layout.name(key).encode())

    populations = {
        "ownerless sessions": (random_tag() for _ in range(count)),
        "sessions of distinct owners": (owner_tag(slot_key, f"user-{n}") for n in range(count)),
        # 10 sessions (devices) per user: a user's sessions and index share one slot.
        "10 sessions per owner": (owner_tag(slot_key, f"user-{n // 10}") for n in range(count)),
    }
    return {
        name: Counter(slot(mint_key(tag)) for tag in tags) for name, tags in populations.items()
    }


def print_spread(count: int) -> None:
    print(f"## Slot spread of {count:,} sessions (asgi_sessions.stores.redis_layout)")
    for population, slots in slot_spread(count).items():
        print(f"  {population:28s} {spread(slots)}")


# -- servers ---------------------------------------------------------------------------


@contextmanager
def topologies(*, fast_failover: bool = False) -> Iterator[dict[str, Any]]:
    """One server, a cluster and a sentinel set; their objects by name (``url`` for each)."""
    from tests.redis_cluster import (
        FAST_DOWN_AFTER_MS,
        FAST_NODE_TIMEOUT_MS,
        SHARED_DOWN_AFTER_MS,
        SHARED_NODE_TIMEOUT_MS,
        RedisClusterSet,
        RedisSentinelSet,
    )
    from tests.redis_server import RedisProcess

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        server = RedisProcess("redis-server", root / "single")
        (root / "single").mkdir()
        cluster = RedisClusterSet(
            "redis-server",
            "redis-cli",
            root / "cluster",
            node_timeout_ms=FAST_NODE_TIMEOUT_MS if fast_failover else SHARED_NODE_TIMEOUT_MS,
        )
        sentinel = RedisSentinelSet(
            "redis-server",
            root / "sentinel",
            down_after_ms=FAST_DOWN_AFTER_MS if fast_failover else SHARED_DOWN_AFTER_MS,
        )
        for topology in (server, cluster, sentinel):
            topology.start()
            stack.callback(topology.stop)
        yield {"redis": server, "redis-cluster": cluster, "redis-sentinel": sentinel}


# -- latency ---------------------------------------------------------------------------


async def compare(variants: dict[str, Op]) -> dict[str, tuple[float, float]]:
    """Median over rounds of the mean (wall, CPU) seconds per operation, rounds interleaved."""
    names = list(variants)
    for name in names:  # warm up: connections, slot maps, loaded scripts
        for _ in range(20):
            await variants[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(ROUNDS):
        for name in names if round_ % 2 == 0 else reversed(names):
            op = variants[name]
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(OPS):
                await op()
            wall[name].append((time.perf_counter() - started) / OPS)
            cpu[name].append((time.process_time() - cpu_started) / OPS)
    return {name: (statistics.median(wall[name]), statistics.median(cpu[name])) for name in names}


def merge(now: float, *, create: bool = False) -> SessionWrite:
    return SessionWrite(
        set={"counter": str(int(now * 1000) % 1000)}, deleted=frozenset(), replace=False,
        create=create, now=now, default_expires_at=now + 3600, expires_cap=None,
        created_at=now,
    )  # fmt: skip


def app(store: RedisStore) -> Starlette:
    async def read(request: Request) -> Response:
        session = await request.state.session
        return JSONResponse({"user": session.get("user")})

    async def write(request: Request) -> Response:
        session = await request.state.session
        session["counter"] = session.get("counter", 0) + 1
        return JSONResponse({})

    return Starlette(
        routes=[Route("/read", read), Route("/write", write)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )


async def latency(urls: dict[str, str]) -> None:
    stores = {}
    for name, url in urls.items():
        stores[name] = RedisStore.from_url(url, wait_for_replicas=False)
        if name != "redis":  # the replicated topologies wait for their replicas by default
            stores[f"{name} + WAIT"] = RedisStore.from_url(url)
    variants: dict[str, Op] = {}
    clients = []
    try:
        for name, store in stores.items():
            saved = await store.create(merge(time.time(), create=True))
            key = saved.key

            def bind(store: RedisStore = store, key: str = key) -> tuple[Op, Op]:
                async def load() -> None:
                    await store.load(key)

                async def save() -> None:
                    await store.save(key, merge(time.time()))

                return load, save

            variants[f"{name}: load"], variants[f"{name}: save 1 key"] = bind()
            transport = httpx.ASGITransport(app=app(store))
            client = httpx.AsyncClient(transport=transport, base_url="http://bench")
            clients.append(client)
            await client.get("/write")  # the client's cookie now names a session

            def bind_http(client: httpx.AsyncClient = client) -> tuple[Op, Op]:
                async def read() -> None:
                    await client.get("/read")

                async def write() -> None:
                    await client.get("/write")

                return read, write

            variants[f"{name}: read request"], variants[f"{name}: write request"] = bind_http()
        medians = await compare(variants)
    finally:
        for client in clients:
            await client.aclose()
        for store in stores.values():
            await store.aclose()
    print(f"## Latency: medians of {ROUNDS} interleaved rounds x {OPS} sequential ops")
    print("  (read/write request = in-process ASGI through the middleware, httpx client)")
    for name, (wall, cpu) in medians.items():
        print(f"  {name:<42} {wall * 1e6:8.1f} µs wall {cpu * 1e6:8.1f} µs CPU")


# -- round trips ----------------------------------------------------------------------


@contextmanager
def counting() -> Iterator[list[int]]:
    """Counts commands (or pipelines) written to any Redis socket: one per round trip."""
    count = [0]
    original = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        await original(self, *args, **kwargs)

    AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


async def round_trips(urls: dict[str, str]) -> None:
    async def untouched(request: Request) -> Response:
        return JSONResponse({})

    async def read(request: Request) -> Response:
        return JSONResponse(dict(await request.state.session))

    async def put(request: Request) -> Response:
        (await request.state.session).update(request.query_params)
        return JSONResponse({})

    async def login(request: Request) -> Response:
        session = await request.state.session
        session["user"] = session.owner = request.query_params["user"]
        return JSONResponse({})

    kinds = [
        ("first write", "/put", {"a": "1"}),
        ("untouched", "/untouched", {}),
        ("read", "/read", {}),
        ("write", "/put", {"b": "2"}),
        ("login (owner set, key rotated)", "/login", {"user": "ada"}),
    ]
    table: dict[str, dict[str, int]] = {kind: {} for kind, _, _ in kinds}
    for name, url in urls.items():
        async with store_from_url(url) as store:
            routes = [Route(f"/{h.__name__}", h) for h in (untouched, read, put, login)]
            middleware = [Middleware(SessionMiddleware, secret_key=SECRET, store=store)]
            transport = httpx.ASGITransport(app=Starlette(routes=routes, middleware=middleware))
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                await client.get("/put", params={"a": "1"})
                await client.get("/login", params={"user": "warm"})
                for script in ("_write", "_remove", "_list", "_unseal", "_read_slot_key"):
                    await store.client.script_load(getattr(store, script).script)
                for _ in range(40):  # sessions on every master, each asked about replicas
                    client.cookies.clear()
                    await client.get("/put", params={"a": "1"})
                client.cookies.clear()
                for kind, path, params in kinds:
                    with counting() as count:
                        (await client.get(path, params=params)).raise_for_status()
                    table[kind][name] = count[0]
    print("## Round trips per request (commands or pipelines sent to Redis)")
    print(f"  {'request':<32}" + "".join(f"{name:>16}" for name in urls))
    for kind, costs in table.items():
        print(f"  {kind:<32}" + "".join(f"{costs[name]:>16}" for name in urls))


# -- failover and several machines ----------------------------------------------------------


async def failovers(sets: dict[str, Any]) -> None:
    print("## Failover: SIGKILL the master under a running app (writers every 20 ms)")
    cluster, sentinel = sets["redis-cluster"], sets["redis-sentinel"]
    async with store_from_url(cluster.url) as store:
        assert isinstance(store, RedisStore)
        doomed = cluster.master_for_slot(0)
        run = await failover.run_failover(
            failover.failover_app(store),
            victim_of=lambda key: key_slot(store.layout.name(key).encode()) in doomed.slots,
            kill_and_wait=lambda: cluster.wait_promoted(cluster.kill_master_of(0)),
        )
    report("cluster (node timeout 1 s)", run)
    async with store_from_url(sentinel.url) as store:
        run = await failover.run_failover(
            failover.failover_app(store),
            victim_of=lambda key: True,
            kill_and_wait=lambda: sentinel.wait_promoted(sentinel.kill_master()),
            bystanders=0,
        )
    report("sentinel (down-after 1 s)", run)


def report(name: str, run: failover.FailoverRun) -> None:
    victims = [a for a in run.attempts if a.victim]
    failed = run.failed(victim=True)
    print(
        f"  {name}: replica promoted {run.promoted_after:.2f} s after the kill; "
        f"its sessions failed for {run.window():.2f} s ({len(failed)} of {len(victims)} "
        f"requests, statuses {sorted({a.status for a in failed})}, Set-Cookie on "
        f"{sum(a.set_cookie for a in failed)}); other masters' sessions failed "
        f"{len(run.failed(victim=False))} times; acknowledged writes lost: {len(run.lost)}"
    )


def machines(url: str, seconds: float) -> None:
    result = multi_process.run(url, users=6, writers=3, seconds=seconds)
    print(f"## Three machines (uvicorn on {', '.join(multi_process.HOSTS)}) on one cluster")
    print(
        f"  6 users x 3 writers, {result.seconds:.1f} s: {result.requests} requests, "
        f"errors {len(result.errors)}, lost writes {len(result.lost_writes)}, "
        f"resurrections {len(result.resurrections)}, saves refused after a logout "
        f"{result.refused_after_logout}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "figure",
        nargs="?",
        default="all",
        choices=["all", "spread", "latency", "round-trips", "failover", "machines"],
    )
    parser.add_argument("--sessions", type=int, default=100_000, help="for the slot spread")
    parser.add_argument("--seconds", type=float, default=10.0, help="for the machines run")
    args = parser.parse_args()
    if args.figure in ("all", "spread"):
        print_spread(args.sessions)
    if args.figure in ("all", "latency", "round-trips", "machines"):
        with topologies() as sets:
            urls = {name: topology.url for name, topology in sets.items()}
            if args.figure in ("all", "latency"):
                asyncio.run(latency(urls))
            if args.figure in ("all", "round-trips"):
                asyncio.run(round_trips(urls))
            if args.figure in ("all", "machines"):
                machines(urls["redis-cluster"], args.seconds)
    if args.figure in ("all", "failover"):
        with topologies(fast_failover=True) as sets:
            asyncio.run(failovers(sets))


if __name__ == "__main__":
    main()

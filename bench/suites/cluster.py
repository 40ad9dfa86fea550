"""RedisStore on one server, on a Redis Cluster and behind Sentinel: slot spread, latency,
round trips per request, failover windows, and three app machines on one cluster.

    python -m bench cluster                      # every figure (~2 min)
    python -m bench cluster --figures spread,round-trips

The topologies are started here with the test suite's own classes (``tests/redis_server.py``,
``tests/redis_cluster.py``): one server, 3 masters + 3 replicas, 1 master + 1 replica + 3
sentinels, on free loopback ports.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from statistics import median
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
from asgi_sessions.stores.redis import RedisStore
from asgi_sessions.stores.redis_layout import ClusterLayout, mint_key, owner_tag, random_tag

from .. import failover, multi_process
from ..harness import Context, Section, log
from ..services import Unavailable
from ..stats import interleave
from ..storeops import change

TITLE = "RedisStore on one server, a Redis Cluster and Sentinel"
FIGURES = ("spread", "latency", "round-trips", "failover", "machines")
SECRET = "cluster-figures-secret-key-long-enough-0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--figures", default=",".join(FIGURES), help="comma-separated")
    parser.add_argument("--sessions", type=int, default=100_000, help="for the slot spread")
    parser.add_argument("--rounds", type=int, help="latency: interleaved rounds (9; quick 3)")
    parser.add_argument("--ops", type=int, help="latency: calls per round (200; quick 50)")
    parser.add_argument("--seconds", type=float, help="machines: seconds of load (10; quick 2)")


# -- slot spread ------------------------------------------------------------------------


def slot_spread(count: int) -> dict[str, Counter[int]]:
    """The slots of ``count`` sessions minted as the store mints them, in three populations."""
    layout = ClusterLayout("asgi_sessions:")
    slot_key = secrets.token_bytes(32)
    populations = {
        "ownerless sessions": (random_tag() for _ in range(count)),
        "sessions of distinct owners": (owner_tag(slot_key, f"user-{n}") for n in range(count)),
        # 10 sessions (devices) per user: a user's sessions and index share one slot.
        "10 sessions per owner": (owner_tag(slot_key, f"user-{n // 10}") for n in range(count)),
    }
    return {
        name: Counter(key_slot(layout.name(mint_key(tag)).encode()) for tag in tags)
        for name, tags in populations.items()
    }


def spread_lines(count: int) -> list[str]:
    lines = [
        f"### Slot spread of {count:,} sessions",
        "",
        "| sessions | slots used (of 16,384) | median per used slot | max |",
        "|---|---:|---:|---:|",
    ]
    for population, slots in slot_spread(count).items():
        per_slot = sorted(slots.values())
        lines.append(
            f"| {population} | {len(slots):,} | {per_slot[len(per_slot) // 2]} | {per_slot[-1]} |"
        )
    assert REDIS_CLUSTER_HASH_SLOTS == 16_384
    return lines


# -- the topologies -------------------------------------------------------------------------


@contextmanager
def topologies(*, fast_failover: bool = False) -> Iterator[dict[str, Any]]:
    """One server, a cluster and a Sentinel set, by store kind (each has ``url``)."""
    from tests.redis_cluster import (
        FAST_DOWN_AFTER_MS,
        FAST_NODE_TIMEOUT_MS,
        SHARED_DOWN_AFTER_MS,
        SHARED_NODE_TIMEOUT_MS,
        RedisClusterSet,
        RedisSentinelSet,
    )
    from tests.redis_server import RedisProcess

    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise Unavailable("redis-server and redis-cli not found (apt-get install redis-server)")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        (root / "single").mkdir()
        sets = {
            "redis": RedisProcess(server, root / "single"),
            "redis-cluster": RedisClusterSet(
                server,
                cli,
                root / "cluster",
                node_timeout_ms=FAST_NODE_TIMEOUT_MS if fast_failover else SHARED_NODE_TIMEOUT_MS,
            ),
            "redis-sentinel": RedisSentinelSet(
                server,
                root / "sentinel",
                down_after_ms=FAST_DOWN_AFTER_MS if fast_failover else SHARED_DOWN_AFTER_MS,
            ),
        }
        for topology in sets.values():
            topology.start()
            stack.callback(topology.stop)
        yield sets


# -- latency -------------------------------------------------------------------------------


def timed(op: Callable[[], Awaitable[Any]], n: int, cpu: list[float]) -> Any:
    """A round: mean wall seconds per call (returned) and CPU seconds (appended to ``cpu``)."""

    async def one_round() -> float:
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(n):
            await op()
        cpu.append((time.process_time() - cpu_started) / n)
        return (time.perf_counter() - started) / n

    return one_round


async def latency(urls: dict[str, str], rounds: int, ops: int) -> dict[str, tuple[float, float]]:
    stores: dict[str, RedisStore] = {}
    for kind, url in urls.items():
        stores[kind] = RedisStore.from_url(url, wait_for_replicas=False)
        if kind != "redis":  # the replicated topologies wait for a replica by default
            stores[f"{kind} + WAIT"] = RedisStore.from_url(url)
    one = {"counter": "1"}
    calls: dict[str, Callable[[], Awaitable[Any]]] = {}
    try:
        for name, store in stores.items():
            key = (await store.create(change(one, create=True))).key
            calls[f"{name}: load"] = lambda s=store, k=key: s.load(k)
            calls[f"{name}: save 1 key"] = lambda s=store, k=key: s.save(
                k, change(one, create=False)
            )
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        sides = {name: timed(op, ops, cpu[name]) for name, op in calls.items()}
        await interleave(sides, 1)  # warm-up: connections, slot maps, scripts, replicas
        for samples in cpu.values():
            samples.clear()
        wall = await interleave(sides, rounds)
        return {name: (median(wall[name]), median(cpu[name])) for name in calls}
    finally:
        for store in stores.values():
            await store.aclose()


# -- round trips ------------------------------------------------------------------------------


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


REQUESTS = [
    ("first write", "/put", {"a": "1"}),
    ("untouched", "/untouched", {}),
    ("read", "/read", {}),
    ("write", "/put", {"b": "2"}),
    ("login (owner set, key rotated)", "/login", {"user": "ada"}),
]


def _app(store: Any) -> Starlette:
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

    routes = [Route(f"/{h.__name__}", h) for h in (untouched, read, put, login)]
    middleware = [Middleware(SessionMiddleware, secret_key=SECRET, store=store)]
    return Starlette(routes=routes, middleware=middleware)


async def round_trips(urls: dict[str, str]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {kind: {} for kind, _, _ in REQUESTS}
    for name, url in urls.items():
        async with store_from_url(url) as store:
            transport = httpx.ASGITransport(app=_app(store))
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                # Warm up: connections, the slot map, the scripts, the slot key, and what
                # each master said about its replicas (sessions on every master).
                await client.get("/login", params={"user": "warm"})
                for script in store.scripts:
                    await store.client.script_load(script.script)
                for _ in range(40):
                    client.cookies.clear()
                    await client.get("/put", params={"a": "1"})
                client.cookies.clear()
                for kind, path, params in REQUESTS:
                    with counting() as count:
                        (await client.get(path, params=params)).raise_for_status()
                    table[kind][name] = count[0]
    return table


# -- failover and several machines --------------------------------------------------------------


async def failovers(sets: dict[str, Any]) -> dict[str, failover.FailoverRun]:
    cluster, sentinel = sets["redis-cluster"], sets["redis-sentinel"]
    runs = {}
    async with store_from_url(cluster.url) as store:
        assert isinstance(store, RedisStore)
        doomed = cluster.master_for_slot(0)
        runs["cluster (cluster-node-timeout 1 s)"] = await failover.run_failover(
            failover.failover_app(store),
            victim_of=lambda key: key_slot(store.layout.name(key).encode()) in doomed.slots,
            kill_and_wait=lambda: cluster.wait_promoted(cluster.kill_master_of(0)),
        )
    async with store_from_url(sentinel.url) as store:
        runs["Sentinel (down-after-milliseconds 1 s)"] = await failover.run_failover(
            failover.failover_app(store),
            victim_of=lambda key: True,
            kill_and_wait=lambda: sentinel.wait_promoted(sentinel.kill_master()),
            bystanders=0,
        )
    return runs


def failover_lines(runs: dict[str, failover.FailoverRun]) -> list[str]:
    lines = [
        "### Failover: SIGKILL the master under writers (one request per 20 ms per session)",
        "",
        "| topology | promoted after | dead master's sessions failed for | their failed"
        " requests | statuses | Set-Cookie on a failure | other masters' failures |"
        " acknowledged writes lost |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, run in runs.items():
        victims = [a for a in run.attempts if a.victim]
        failed = run.failed(victim=True)
        lines.append(
            f"| {name} | {run.promoted_after:.2f} s | {run.window():.2f} s | "
            f"{len(failed)} of {len(victims)} | {sorted({a.status for a in failed})} | "
            f"{sum(a.set_cookie for a in failed)} | {len(run.failed(victim=False))} | "
            f"{len(run.lost)} |"
        )
    return lines


def run(ctx: Context, args: argparse.Namespace) -> Section:
    figures = [name.strip() for name in args.figures.split(",") if name.strip()]
    unknown = set(figures) - set(FIGURES)
    if unknown:
        raise SystemExit(f"unknown figures {sorted(unknown)}; choose from {FIGURES}")
    rounds = args.rounds or (3 if ctx.quick else 9)
    ops = args.ops or (50 if ctx.quick else 200)
    seconds = args.seconds or (2.0 if ctx.quick else 10.0)
    lines: list[str] = []
    data: dict[str, Any] = {}
    if "spread" in figures:
        lines += [*spread_lines(args.sessions), ""]
    if {"latency", "round-trips", "machines"} & set(figures):
        with topologies() as sets:
            urls = {kind: topology.url for kind, topology in sets.items()}
            if "latency" in figures:
                log("cluster: latency")
                seconds_by = asyncio.run(latency(urls, rounds, ops))
                data["latency"] = seconds_by
                lines += [
                    f"### Latency: medians of {rounds} interleaved rounds x {ops} calls",
                    "",
                    "| store: operation | wall us | CPU us |",
                    "|---|---:|---:|",
                    *(
                        f"| {n} | {w * 1e6:.1f} | {c * 1e6:.1f} |"
                        for n, (w, c) in seconds_by.items()
                    ),
                    "",
                ]
            if "round-trips" in figures:
                log("cluster: round trips")
                table = asyncio.run(round_trips(urls))
                data["round_trips"] = table
                lines += [
                    "### Round trips per request (commands or pipelines sent to Redis)",
                    "",
                    "| request | " + " | ".join(urls) + " |",
                    "|---|" + "---:|" * len(urls),
                    *(
                        f"| {kind} | " + " | ".join(str(costs[n]) for n in urls) + " |"
                        for kind, costs in table.items()
                    ),
                    "",
                ]
            if "machines" in figures:
                log("cluster: three machines")
                result = multi_process.run(urls["redis-cluster"], seconds=seconds)
                data["machines"] = vars(result)
                lines += [
                    f"### Three machines (uvicorn on {', '.join(multi_process.HOSTS)}) on one"
                    " cluster, 6 users x 3 writers",
                    "",
                    f"{result.seconds:.1f} s: {result.requests} requests, errors "
                    f"{len(result.errors)}, lost writes {len(result.lost_writes)}, resurrections "
                    f"{len(result.resurrections)}, saves refused after a logout "
                    f"{result.refused_after_logout}.",
                    "",
                ]
    if "failover" in figures:
        log("cluster: failovers")
        with topologies(fast_failover=True) as sets:
            runs = asyncio.run(failovers(sets))
        data["failover"] = {
            name: {
                "promoted_after": r.promoted_after,
                "window": r.window(),
                "failed": len(r.failed(victim=True)),
                "bystanders_failed": len(r.failed(victim=False)),
                "lost": r.lost,
                "crashes": r.crashes,
            }
            for name, r in runs.items()
        }
        lines += failover_lines(runs)
    return Section(TITLE, lines, {"figures": figures} | data)

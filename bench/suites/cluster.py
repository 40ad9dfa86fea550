"""RedisStore on one server, on a Redis Cluster and behind Sentinel: slot spread, latency,
round trips per request, failover windows, and three app machines on one cluster.

    python -m bench cluster                      # every figure (~2 min)
    python -m bench cluster --figures spread,round-trips

The topologies are started here with the test suite's own classes (``tests/redis_server.py``,
``tests/redis_cluster.py``): one server, 3 masters + 3 replicas, 1 master + 1 replica + 3
sentinels, on free loopback ports. The failover driver and the three machines are also
what ``tests/stores/test_redis_failover.py`` and ``test_redis_multi_process.py`` run.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot

from asgi_sessions import Store, store_from_url
from asgi_sessions.stores.redis import RedisStore
from asgi_sessions.stores.redis_layout import ClusterLayout, mint_key, owner_tag, random_tag

from ..apps import change
from ..harness import Context, Section, log, sized, table
from ..served import Result, make_session_app, run_writers
from ..services import Unavailable
from ..stats import ops_table, time_ops

TITLE = "RedisStore on one server, a Redis Cluster and Sentinel"
FIGURES = ("spread", "latency", "round-trips", "failover", "machines")
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # three machines, on loopback
PAUSE = 0.02  # between a failover writer's requests


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--figures", default=",".join(FIGURES), help="comma-separated")
    parser.add_argument("--sessions", type=int, default=100_000, help="for the slot spread")
    sized(parser, rounds=(9, 3, "latency: interleaved rounds"), ops=(200, 50, "latency: calls"))
    sized(parser, seconds=(10.0, 2.0, "machines: seconds of load"))


def spread_lines(count: int) -> list[str]:
    """The slots of ``count`` sessions minted as the store mints them, in three populations."""
    layout = ClusterLayout("asgi_sessions:")
    slot_key = secrets.token_bytes(32)
    populations = {
        "ownerless sessions": (random_tag() for _ in range(count)),
        "sessions of distinct owners": (owner_tag(slot_key, f"user-{n}") for n in range(count)),
        # 10 sessions (devices) per user: a user's sessions and index share one slot.
        "10 sessions per owner": (owner_tag(slot_key, f"user-{n // 10}") for n in range(count)),
    }
    rows = []
    for population, tags in populations.items():
        slots = Counter(key_slot(layout.name(mint_key(tag)).encode()) for tag in tags)
        per_slot = sorted(slots.values())
        rows.append([population, f"{len(slots):,}", per_slot[len(per_slot) // 2], per_slot[-1]])
    head = ["sessions", "slots used (of 16,384):", "median per used slot:", "max:"]
    return [f"### Slot spread of {count:,} sessions", "", *table(head, rows)]


@contextmanager
def topologies(*, fast_failover: bool = False) -> Iterator[dict[str, Any]]:
    """One server, a cluster and a Sentinel set, by store kind (each has ``url``)."""
    from tests import redis_cluster as rc
    from tests.redis_server import RedisProcess

    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        raise Unavailable("redis-server and redis-cli not found (apt-get install redis-server)")
    node_timeout = rc.FAST_NODE_TIMEOUT_MS if fast_failover else rc.SHARED_NODE_TIMEOUT_MS
    down_after = rc.FAST_DOWN_AFTER_MS if fast_failover else rc.SHARED_DOWN_AFTER_MS
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp, ExitStack() as stack:
        root = Path(tmp)
        (root / "single").mkdir()
        sets = {
            "redis": RedisProcess(server, root / "single"),
            "redis-cluster": rc.RedisClusterSet(
                server, cli, root / "cluster", node_timeout_ms=node_timeout
            ),
            "redis-sentinel": rc.RedisSentinelSet(
                server, root / "sentinel", down_after_ms=down_after
            ),
        }
        for topology in sets.values():
            topology.start()
            stack.callback(topology.stop)
        yield sets


async def latency(urls: dict[str, str], rounds: int, ops: int) -> dict[str, tuple[float, float]]:
    stores: dict[str, RedisStore] = {}
    for kind, url in urls.items():
        stores[kind] = RedisStore.from_url(url, wait_for_replicas=False)
        if kind != "redis":  # the replicated topologies wait for a replica by default
            stores[f"{kind} + WAIT"] = RedisStore.from_url(url)
    one, calls = {"counter": "1"}, {}
    try:
        for name, s in stores.items():
            key = (await s.create(change(one, create=True))).key
            calls[f"{name}: load"] = lambda s=s, k=key: s.load(k)
            calls[f"{name}: save 1 key"] = lambda s=s, k=key: s.save(k, change(one, create=False))
        return await time_ops(calls, rounds, ops)  # its warm-up: slot maps, scripts, replicas
    finally:
        for s in stores.values():
            await s.aclose()


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
    ("first write", "/write", {"key": "a", "value": "1"}),
    ("untouched", "/", {}),
    ("read", "/read", {}),
    ("write", "/write", {"key": "b", "value": "2"}),
    ("login (owner set, key rotated)", "/login", {"user": "ada", "owner": "1"}),
]


async def round_trips(urls: dict[str, str]) -> dict[str, dict[str, int]]:
    trips: dict[str, dict[str, int]] = {kind: {} for kind, _, _ in REQUESTS}
    for name, url in urls.items():
        async with store_from_url(url) as store:
            transport = httpx.ASGITransport(app=make_session_app(store))
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
                # Warm up: connections, the slot map, the scripts, the slot key, and what
                # each master said about its replicas (sessions on every master).
                await client.get("/login", params={"user": "warm", "owner": "1"})
                for script in store.scripts:
                    await store.client.script_load(script.script)
                for _ in range(40):
                    client.cookies.clear()
                    await client.get("/write", params={"key": "a", "value": "1"})
                client.cookies.clear()
                for kind, path, params in REQUESTS:
                    with counting() as count:
                        (await client.get(path, params=params)).raise_for_status()
                    trips[kind][name] = count[0]
    return trips


# -- failover ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One request: seconds after the kill (negative before it), and what came back."""

    at: float
    victim: bool
    status: int
    set_cookie: bool


@dataclass
class FailoverRun:
    promoted_after: float = 0.0
    """Seconds from the kill until the topology had promoted the replica."""
    attempts: list[Attempt] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    """Sessions that count fewer writes than their 200s acknowledged."""
    crashes: list[str] = field(default_factory=list)
    """Exceptions that escaped the app (a 500): anything but the store's own errors."""

    def failed(self, *, victim: bool) -> list[Attempt]:
        return [a for a in self.attempts if a.victim is victim and a.status != 200]

    def window(self) -> float:
        """Seconds from the first failed request on the dead master's sessions to the
        first success after the last failure (0 if nothing failed)."""
        failures = self.failed(victim=True)
        if not failures:
            return 0.0
        last = max(a.at for a in failures)
        recovered = [a.at for a in self.attempts if a.victim and a.status == 200 and a.at > last]
        return (min(recovered) if recovered else last) - min(a.at for a in failures)


def failover_app(store: Store) -> Any:
    """The app a failover runs under: ``/write?key=n`` counts a session's writes."""
    return make_session_app(store)


async def run_failover(
    app: Any,
    *,
    victim_of: Callable[[str], bool],
    kill_and_wait: Callable[[], float],
    victims: int = 4,
    bystanders: int = 4,
    after: int = 5,
    deadline: float = 40.0,
) -> FailoverRun:
    """Drive ``app`` (one in-process app, never restarted) through a failover: one writer per
    session, a write every 20 ms, while a thread kills the master and waits for the topology
    to promote its replica; afterwards each session must count every write acknowledged.

    Args:
        victim_of: whether a session key lives on the master that will be killed.
        kill_and_wait: kills that master and returns once the replica took over (run in
            a thread); returns the seconds that took.
        victims / bystanders: sessions on the killed master / elsewhere (a cluster's
            other masters; with Sentinel every session is a victim).
        after: successes each victim must see after the promotion before the run ends.
    """
    run = FailoverRun()

    async def recording(scope: Any, receive: Any, send: Any) -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            run.crashes.append("".join(traceback.format_exception(exc)[-4:]))
            raise

    transport = httpx.ASGITransport(app=recording, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        cookies = await _sessions(http, victim_of, victims, bystanders)
        killed_at = time.monotonic() + 0.3  # a short baseline before the kill
        promoted = asyncio.Event()

        async def kill() -> None:
            await asyncio.sleep(max(0.0, killed_at - time.monotonic()))
            run.promoted_after = await asyncio.to_thread(kill_and_wait)
            promoted.set()

        async def writer(cookie: str, victim: bool) -> tuple[str, int]:
            acknowledged = successes_after = 0
            stop = time.monotonic() + deadline
            while time.monotonic() < stop and successes_after < after:
                started = time.monotonic() - killed_at
                response = await http.get(
                    "/write", params={"key": "n"}, headers={"cookie": f"session={cookie}"}
                )
                run.attempts.append(
                    Attempt(started, victim, response.status_code, "set-cookie" in response.headers)
                )
                if response.status_code == 200:
                    acknowledged += 1
                    successes_after += promoted.is_set()
                await asyncio.sleep(PAUSE)
            return cookie, acknowledged

        killer = asyncio.create_task(kill())
        results = await asyncio.gather(*(writer(c, victim) for c, victim in cookies.items()))
        await killer
        for cookie, acknowledged in results:
            stored = (await http.get("/read", headers={"cookie": f"session={cookie}"})).json()
            if stored.get("n", 0) < acknowledged + 1:  # + its creation
                run.lost.append(f"acknowledged {acknowledged} writes, stored {stored!r}")
    return run


async def _sessions(
    http: httpx.AsyncClient, victim_of: Callable[[str], bool], victims: int, bystanders: int
) -> dict[str, bool]:
    """Create sessions until there are enough on the doomed master and elsewhere."""
    cookies: dict[str, bool] = {}
    wanted = {True: victims, False: bystanders}
    for _ in range(100 * (victims + bystanders)):
        if not any(wanted.values()):
            http.cookies.clear()  # from here on every request names its session itself
            return cookies
        http.cookies.clear()  # each creation starts a new session
        response = await http.get("/write", params={"key": "n"})
        response.raise_for_status()
        cookie = response.cookies["session"]
        victim = victim_of(cookie.split(".")[0])
        if wanted[victim]:
            wanted[victim] -= 1
            cookies[cookie] = victim
    raise RuntimeError(f"could not place sessions as asked: {wanted} still wanted")


async def failovers(sets: dict[str, Any]) -> dict[str, FailoverRun]:
    cluster, sentinel = sets["redis-cluster"], sets["redis-sentinel"]
    runs = {}
    async with store_from_url(cluster.url) as store:
        assert isinstance(store, RedisStore)
        doomed = cluster.master_for_slot(0)
        runs["cluster (cluster-node-timeout 1 s)"] = await run_failover(
            failover_app(store),
            victim_of=lambda key: key_slot(store.layout.name(key).encode()) in doomed.slots,
            kill_and_wait=lambda: cluster.wait_promoted(cluster.kill_master_of(0)),
        )
    async with store_from_url(sentinel.url) as store:
        runs["Sentinel (down-after-milliseconds 1 s)"] = await run_failover(
            failover_app(store),
            victim_of=lambda key: True,
            kill_and_wait=lambda: sentinel.wait_promoted(sentinel.kill_master()),
            bystanders=0,
        )
    return runs


def failover_lines(runs: dict[str, FailoverRun]) -> list[str]:
    head = ["topology", "promoted after:", "dead master's sessions failed for:"]
    head += ["their failed requests:", "statuses", "Set-Cookie on a failure:"]
    head += ["other masters' failures:", "acknowledged writes lost:"]
    rows = []
    for name, run in runs.items():
        failed = run.failed(victim=True)
        victims = sum(a.victim for a in run.attempts)
        row = [name, f"{run.promoted_after:.2f} s", f"{run.window():.2f} s"]
        row += [f"{len(failed)} of {victims}", sorted({a.status for a in failed})]
        row += [sum(a.set_cookie for a in failed), len(run.failed(victim=False)), len(run.lost)]
        rows.append(row)
    title = "### Failover: SIGKILL the master under writers (one request per 20 ms per session)"
    return [title, "", *table(head, rows)]


def machines(url: str, *, users: int = 6, writers: int = 3, seconds: float = 2.0) -> Result:
    """The app on three machines (:data:`HOSTS`) on the store at ``url``, a user's requests
    spread over them; each user owns its session, every other one logs out while its
    writers still run, and a write's view works 5 ms between load and save (where a logout
    can overtake it)."""
    options = {"users": users, "writers": writers, "seconds": seconds}
    return run_writers(url, hosts=HOSTS, work=0.005, logouts=True, owners=True, **options)


def run(ctx: Context, args: argparse.Namespace) -> Section:
    figures = [name.strip() for name in args.figures.split(",") if name.strip()]
    if unknown := set(figures) - set(FIGURES):
        raise SystemExit(f"unknown figures {sorted(unknown)}; choose from {FIGURES}")
    rounds, ops = args.rounds, args.ops
    lines: list[str] = []
    data: dict[str, Any] = {"figures": figures}
    if "spread" in figures:
        lines += [*spread_lines(args.sessions), ""]
    if {"latency", "round-trips", "machines"} & set(figures):
        with topologies() as sets:
            urls = {kind: topology.url for kind, topology in sets.items()}
            if "latency" in figures:
                log("cluster: latency")
                data["latency"] = m = asyncio.run(latency(urls, rounds, ops))
                title = f"### Latency: medians of {rounds} interleaved rounds x {ops} calls"
                lines += [title, "", *ops_table(m, "store: operation"), ""]
            if "round-trips" in figures:
                log("cluster: round trips")
                data["round_trips"] = trips = asyncio.run(round_trips(urls))
                rows = ([kind, *(costs[n] for n in urls)] for kind, costs in trips.items())
                title = "### Round trips per request (commands or pipelines sent to Redis)"
                lines += [title, "", *table(["request", *(f"{n}:" for n in urls)], rows), ""]
            if "machines" in figures:
                log("cluster: three machines")
                r = machines(urls["redis-cluster"], seconds=args.seconds)
                data["machines"] = vars(r) | {"pids": sorted(r.pids)}
                lines += [
                    f"### Three machines (uvicorn on {', '.join(HOSTS)}) on one cluster, "
                    "6 users x 3 writers",
                    "",
                    f"{r.seconds:.1f} s: {r.requests} requests, errors {len(r.errors)}, lost "
                    f"writes {r.lost_writes}, resurrections {len(r.resurrections)}, saves "
                    f"refused after a logout {r.refused_after_logout}.",
                    "",
                ]
    if "failover" in figures:
        log("cluster: failovers")
        with topologies(fast_failover=True) as sets:
            runs = asyncio.run(failovers(sets))
        data["failover"] = {
            name: {"promoted_after": r.promoted_after, "window": r.window(), "lost": r.lost}
            | {"failed": len(r.failed(victim=True)), "crashes": r.crashes}
            | {"bystanders_failed": len(r.failed(victim=False))}
            for name, r in runs.items()
        }
        lines += failover_lines(runs)
    return Section(TITLE, lines, data)

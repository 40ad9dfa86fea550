"""Same-key merges under contention (issue 23): N requests (2, 8, 64) load ONE session, meet
at a barrier, then each appends one item to the same list,
``session.setdefault("cart", []).append(item)``; beside them the same N requests each
saving one plain key (``session["k"] = i``), and, as a control that the check can fail,
each reassigning the list (``session["cart"] = [*cart, item]``: last writer wins).

After every batch the session is read back: "kept" is the worst batch's count of the N
appended items found exactly once (after the seeded item, still first). Cost per save:
wall and CPU (this process's, all threads) microseconds of the N concurrent requests
(load, meet, change, save), divided by N; medians over interleaved rounds. Round trips:
client->server turns per request (its load and its save), counted by a relay with no delay
in front of Redis and PostgreSQL, in a separate pass. In-process ASGI, as ``inprocess``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..apps import MAX_AGE, SECRET
from ..asgi import ASGIApp, call
from ..harness import Context, Section, log
from ..netpath import RelayProcess
from ..pg import POSTGRES, scratch_schema
from ..services import REDIS, Unavailable
from ..stats import Round, fmt, interleave

TITLE = "Same-key merges under contention: one-item appends to one list"
STORES = ("memory", "sqlite", "redis", "postgres")
WRITERS = (2, 8, 64)
OPS = {
    "append": 'merged append: `session.setdefault("cart", []).append(item)`',
    "plain": 'plain one-key save: `session["k"] = i`',
    "reassign": 'control, last writer wins: `session["cart"] = [*cart, item]`',
}
SEED = "seeded"
REDIS_PREFIX = "bench_contention:"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated")
    parser.add_argument(
        "--writers", default=",".join(map(str, WRITERS)), help="concurrent requests (2,8,64)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (15; quick 2)")
    parser.add_argument(
        "--saves", type=int, help="timed saves per cell per round (128; quick 32), in batches of N"
    )
    parser.add_argument(
        "--count-batches", type=int, help="batches counted for round trips (5; quick 2)"
    )


class Arena:
    """The app: every request of a batch loads the session, then waits for the others."""

    def __init__(self, store: Any) -> None:
        from asgi_sessions import SessionMiddleware

        self.barrier = asyncio.Barrier(1)
        routes = [
            Route("/seed", self.seed),
            Route("/read", self.read),
            *(Route(f"/{op}", self.change) for op in OPS),
        ]
        middleware = Middleware(SessionMiddleware, secret_key=SECRET, store=store, max_age=MAX_AGE)
        self.app: ASGIApp = Starlette(routes=routes, middleware=[middleware])

    async def seed(self, request: Request) -> Response:
        session = await request.state.session
        session.update({"user": "alice", "cart": [SEED], "k": -1})
        return PlainTextResponse("seeded")

    async def read(self, request: Request) -> Response:
        return JSONResponse(dict(await request.state.session))

    async def change(self, request: Request) -> Response:
        session = await request.state.session
        await self.barrier.wait()  # every request of the batch has loaded: all race
        item = request.query_params["item"]
        op = request.url.path[1:]
        if op == "append":
            session.setdefault("cart", []).append(item)
        elif op == "plain":
            session["k"] = int(item)
        else:
            session["cart"] = [*session.get("cart", []), item]
        return PlainTextResponse("ok")


@dataclass
class Cell:
    """One (store, writers, op): timings per round, and what every batch kept."""

    wall: list[float] = field(default_factory=list)  # seconds per save, one per round
    cpu: list[float] = field(default_factory=list)
    batches: int = 0
    worst: int | None = None  # fewest of the N items kept in one batch
    kept: int = 0  # items kept over all batches (plain: batches whose k was written)
    expected: int = 0
    extra: int = 0  # items found more than once, or never written
    seed_moved: int = 0  # batches whose seeded item no longer leads the list
    round_trips: float | None = None

    def check(self, op: str, items: list[str], stored: dict[str, Any]) -> None:
        self.batches += 1
        if op == "plain":
            self.kept += int(stored.get("k") in {int(item) for item in items})
            self.expected += 1
            return
        cart = stored.get("cart", [])
        kept = sum(1 for item in items if cart.count(item) == 1)
        self.kept += kept
        self.expected += len(items)
        self.extra += len(cart) - 1 - kept
        self.seed_moved += int(cart[:1] != [SEED])
        self.worst = kept if self.worst is None else min(self.worst, kept)


@dataclass
class Outcome:
    """One batch: what its concurrent requests cost, and the session afterwards."""

    wall: float
    cpu: float
    turns: int  # through the relay, 0 without one
    items: list[str]
    stored: dict[str, Any]


async def batch(
    arena: Arena, op: str, writers: int, tag: str, relay: RelayProcess | None = None
) -> Outcome:
    """A fresh session, then ``writers`` concurrent requests on it (timed, and their turns
    counted if a ``relay`` is given), then the session read back (untimed)."""
    seeded = await call(arena.app, "/seed")
    cookie = seeded.set_cookie()
    if seeded.status != 200 or cookie is None:
        raise RuntimeError(f"seeding answered {seeded.status} without a session cookie")
    items = [str(i) if op == "plain" else f"{tag}-{i}" for i in range(writers)]
    arena.barrier = asyncio.Barrier(writers)
    turns = relay.turns() if relay else 0
    started, cpu_started = time.perf_counter(), time.process_time()
    replies = await asyncio.gather(
        *(call(arena.app, f"/{op}", cookie, query_string=f"item={i}".encode()) for i in items)
    )
    cpu, wall = time.process_time() - cpu_started, time.perf_counter() - started
    turns = relay.turns() - turns if relay else 0
    bad = [r.status for r in replies if r.status != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} of {writers} /{op} requests answered {bad[:3]}")
    stored = json.loads((await call(arena.app, "/read", cookie)).body)
    return Outcome(wall, cpu, turns, items, stored)


def timed_round(arena: Arena, op: str, writers: int, saves: int, cell: Cell) -> Round:
    """A round of one cell: ``saves // writers`` batches; returns wall seconds per save and
    appends CPU seconds per save to ``cell.cpu``."""
    batches = max(1, saves // writers)
    tags = itertools.count()

    async def one_round() -> float:
        wall = cpu = 0.0
        for _ in range(batches):
            outcome = await batch(arena, op, writers, f"b{next(tags)}")
            cell.check(op, outcome.items, outcome.stored)
            wall += outcome.wall
            cpu += outcome.cpu
        cell.cpu.append(cpu / (batches * writers))
        return wall / (batches * writers)

    return one_round


async def measure(
    store: Any, writers_list: list[int], rounds: int, saves: int
) -> dict[int, dict[str, Cell]]:
    arena = Arena(store)
    cells: dict[int, dict[str, Cell]] = {}
    async with store:
        for writers in writers_list:
            cells[writers] = by_op = {op: Cell() for op in OPS}
            sides = {op: timed_round(arena, op, writers, saves, by_op[op]) for op in OPS}
            for op in OPS:  # one uncounted batch each: connections, scripts, statements
                await batch(arena, op, writers, "warm")
            samples = await interleave(sides, rounds)
            for op, cell in by_op.items():
                cell.wall = samples[op]
            log(f"    {writers} writers: done")
    return cells


def _through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the relay's (the user kept)."""
    parts = urlsplit(url)
    user, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user}{at}127.0.0.1:{port}"))


async def count_round_trips(
    make: Callable[[str], Any], url: str, writers_list: list[int], batches: int
) -> dict[int, dict[str, float]]:
    """Turns per request through a counting relay in front of the server at ``url``."""
    parts = urlsplit(url)
    relay = RelayProcess(parts.hostname or "127.0.0.1", parts.port or 0)
    try:
        store = make(_through(url, relay.port))
        arena = Arena(store)
        out: dict[int, dict[str, float]] = {}
        async with store:
            for writers in writers_list:
                for op in OPS:
                    for _ in range(2):  # new connections' handshakes and first statements
                        await batch(arena, op, writers, "warm")
                    turns = 0
                    for number in range(batches):
                        turns += (await batch(arena, op, writers, f"c{number}", relay)).turns
                    out.setdefault(writers, {})[op] = turns / (batches * writers)
        return out
    finally:
        relay.close()


@asynccontextmanager
async def store_factory(kind: str, ctx: Context) -> AsyncIterator[tuple[Callable[[str], Any], str]]:
    """``(make, url)``: ``make(url)`` builds a fresh store of ``kind`` on ``url`` (the server's
    own, or a relay's in front of it); ``url`` is empty for stores without a server."""
    if kind == "memory":
        from asgi_sessions import MemoryStore

        yield (lambda _: MemoryStore(max_entries=100_000)), ""
    elif kind == "sqlite":
        from asgi_sessions import SQLiteStore

        path = ctx.tmpdir / "contention.sqlite3"
        yield (lambda _: SQLiteStore(path)), ""
    elif kind == "redis":
        from asgi_sessions.stores.redis import RedisStore

        url = ctx.services.url(REDIS)
        try:
            yield (lambda u: RedisStore.from_url(u, prefix=REDIS_PREFIX)), url
        finally:
            await _drop_redis_keys(url)
    elif kind == "postgres":
        from asgi_sessions.stores.postgres import PostgresStore

        async with scratch_schema(ctx.services.url(POSTGRES), "contention") as dsn:
            yield (lambda u: PostgresStore(u, table="bench_contention")), dsn
    else:
        raise SystemExit(f"--stores: no store {kind!r}; known: {', '.join(STORES)}")


async def _drop_redis_keys(url: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(f"{REDIS_PREFIX}*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.delete(*keys[start : start + 1000])
    finally:
        await client.aclose()


async def one_store(
    kind: str, ctx: Context, writers: list[int], rounds: int, saves: int, count: int
) -> dict[int, dict[str, Cell]]:
    async with store_factory(kind, ctx) as (make, url):
        cells = await measure(make(url), writers, rounds, saves)
        if url:
            trips = await count_round_trips(make, url, writers, count)
            for n, by_op in trips.items():
                for op, value in by_op.items():
                    cells[n][op].round_trips = value
    return cells


def _kept(op: str, cell: Cell, writers: int) -> str:
    if op == "plain":
        return f"a written `k` in {cell.kept}/{cell.batches} batches"
    text = f"{cell.worst}/{writers}"
    if cell.extra:
        text += f", {cell.extra} extra"
    if cell.seed_moved:
        text += f", seeded item moved in {cell.seed_moved} batches"
    return text


def _per_round(mine: list[float], plain: list[float]) -> list[float]:
    return [a / b for a, b in zip(mine, plain, strict=True)]


def table(cells: dict[int, dict[str, Cell]]) -> list[str]:
    lines = [
        "| writers | save | kept (worst batch) | batches | wall µs per save | wall / plain "
        "| CPU µs per save | CPU / plain | round trips per request |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for writers, by_op in cells.items():
        plain = by_op["plain"]
        for op, cell in by_op.items():
            wall = _per_round(cell.wall, plain.wall)
            cpu = _per_round(cell.cpu, plain.cpu)
            trips = "-" if cell.round_trips is None else f"{cell.round_trips:.2f}"
            lines.append(
                f"| {writers} | {op} | {_kept(op, cell, writers)} | {cell.batches} | "
                f"{fmt(cell.wall, 1e6)} | {fmt(wall, digits=2)} | {fmt(cell.cpu, 1e6)} | "
                f"{fmt(cpu, digits=2)} | {trips} |"
            )
    return lines


def _data(cells: dict[int, dict[str, Cell]]) -> dict[str, Any]:
    return {
        str(writers): {
            op: {
                "wall_us": statistics.median(cell.wall) * 1e6,
                "cpu_us": statistics.median(cell.cpu) * 1e6,
                "wall_us_rounds": [w * 1e6 for w in cell.wall],
                "cpu_us_rounds": [c * 1e6 for c in cell.cpu],
                "wall_vs_plain": statistics.median(_per_round(cell.wall, by_op["plain"].wall)),
                "cpu_vs_plain": statistics.median(_per_round(cell.cpu, by_op["plain"].cpu)),
                "batches": cell.batches,
                "worst_kept": cell.worst,
                "kept": cell.kept,
                "expected": cell.expected,
                "extra": cell.extra,
                "seed_moved": cell.seed_moved,
                "round_trips": cell.round_trips,
            }
            for op, cell in by_op.items()
        }
        for writers, by_op in cells.items()
    }


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds = args.rounds or (2 if ctx.quick else 15)
    saves = args.saves or (32 if ctx.quick else 128)
    count = args.count_batches or (2 if ctx.quick else 5)
    writers = [int(n) for n in args.writers.split(",")]
    lines = [
        f"{rounds} interleaved rounds; per round and cell {saves} timed saves in batches of "
        "N concurrent requests on one fresh session (seeded with "
        f'`{{"user": "alice", "cart": ["{SEED}"], "k": -1}}`; seeding and the check '
        "untimed). Every request loads the session, waits at a barrier until all N have "
        "loaded, changes it and saves. Rows:",
        "",
        *(f"- `{op}`: {text}" for op, text in OPS.items()),
        "",
        "Each figure: the median over rounds [p10-p90 of rounds]; `/ plain` is taken per "
        "round against the plain save of the same round.",
        "",
        "kept: the fewest of a batch's N items found exactly once, the seeded item first "
        "(`plain`: batches whose `k` is one of the N written values). Round trips per request "
        "(one load and one save): turns through a counting relay, after two uncounted "
        "batches.",
    ]
    data: dict[str, Any] = {"rounds": rounds, "saves": saves, "stores": {}, "skipped": {}}
    for kind in args.stores.split(","):
        log(f"  {kind}")
        try:
            cells = asyncio.run(one_store(kind, ctx, writers, rounds, saves, count))
        except Unavailable as exc:
            data["skipped"][kind] = str(exc)
            lines += ["", f"### {kind}", "", f"Skipped: {exc}."]
            continue
        data["stores"][kind] = _data(cells)
        lines += ["", f"### {kind}", "", *table(cells)]
    if not data["stores"]:
        raise Unavailable("; ".join(data["skipped"].values()))
    lost = [
        f"{kind} x{n}"
        for kind, by_n in data["stores"].items()
        for n, by_op in by_n.items()
        if by_op["append"]["kept"] != by_op["append"]["expected"]
        or by_op["append"]["extra"]
        or by_op["append"]["seed_moved"]
    ]
    verdict = "PASS" if not lost else f"**MISS** ({', '.join(lost)})"
    lines += [
        "",
        f"Goal: every append kept, none twice, on every store and N: {verdict}. The "
        "`reassign` control must lose items (it is last writer wins), or the check "
        "proves nothing.",
    ]
    return Section(TITLE, lines, data)

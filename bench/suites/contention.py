"""Same-key merges under contention (issue 23): per batch, N concurrent requests (2, 8, 64)
load one fresh session (seeded with `{"user": "alice", "cart": ["seeded"], "k": -1}`), wait
at a barrier until all N have loaded, change it and save. Rows:

- `append`: merged append, `session.setdefault("cart", []).append(item)`
- `plain`: plain one-key save, `session["k"] = i`
- `reassign`: the control, last writer wins, `session["cart"] = [*cart, item]`: it must
  lose items, or the check proves nothing

kept: the fewest of a batch's N items found exactly once, the seeded item first and nothing
else in the list (`plain`: batches whose `k` is one of the N written values). Cost per save:
wall and CPU (this process's, every thread) of the N requests over N, seeding and the check
untimed; each figure the median over interleaved rounds [p10-p90 of rounds], `/ plain` taken
per round against the plain save of the same round. Round trips per request (one load, one
save): client->server turns through a counting relay (`bench/netpath.py`) in front of Redis
and PostgreSQL, in a pass of its own, after two uncounted batches. In-process ASGI.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from asgi_sessions import SessionMiddleware, store_from_url

from ..apps import SECRET, seed
from ..asgi import call
from ..harness import Context, Section, log, sized, table
from ..netpath import RelayProcess
from ..pg import POSTGRES, scratch_schema
from ..services import REDIS, Unavailable
from ..stats import fmt, interleave

TITLE = "Same-key merges under contention: one-item appends to one list"
OPS = ("append", "plain", "reassign")
STORES = ("memory", "sqlite", "redis", "postgres")
SEEDED = '{"user": "alice", "cart": ["seeded"], "k": -1}'
Batch = tuple[float, float, int, int, bool]  # wall, CPU, turns, items kept, bad list
HEAD = ["writers:", "save", "kept (worst batch)", "batches:", "wall µs per save:", "wall / plain:"]
HEAD += ["CPU µs per save:", "CPU / plain:", "round trips per request:"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated")
    parser.add_argument("--writers", default="2,8,64", help="concurrent requests per batch")
    sized(parser, rounds=(15, 2, "interleaved rounds"), saves=(128, 32, "saves per cell, round"))
    sized(parser, count_batches=(5, 2, "batches per cell counted for round trips"))


class Arena:
    """The app: /seed, /read, and /OP?i, whose requests meet at the barrier once loaded."""

    def __init__(self, store: Any) -> None:
        self.barrier = asyncio.Barrier(1)
        self.app = SessionMiddleware(self.view, SECRET, store, max_age=3600)

    async def view(self, scope: Any, receive: Any, send: Any) -> None:
        session = await scope["state"]["session"]
        op, item = scope["path"][1:], scope["query_string"].decode()
        if op == "seed":
            session.update(json.loads(SEEDED))
        elif op != "read":
            await self.barrier.wait()  # every request of the batch has loaded: all race
            if op == "append":
                session.setdefault("cart", []).append(item)
            elif op == "plain":
                session["k"] = int(item)
            else:
                session["cart"] = [*session.get("cart", []), item]
        body = json.dumps(dict(session)).encode() if op == "read" else b"ok"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def batch(self, op: str, n: int, relay: RelayProcess | None = None) -> Batch:
        """A fresh session, ``n`` concurrent requests on it (timed; their turns counted if a
        ``relay`` is given), the session read back: (wall, cpu, turns, kept, bad)."""
        cookie = await seed(self.app)
        calls = [call(self.app, f"/{op}", cookie, query_string=b"%d" % i) for i in range(n)]
        self.barrier, turns = asyncio.Barrier(n), relay.turns() if relay else 0
        started, cpu_started = time.perf_counter(), time.process_time()
        replies = await asyncio.gather(*calls)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        turns = relay.turns() - turns if relay else 0
        if bad := [r.status for r in replies if r.status != 200]:
            raise RuntimeError(f"{len(bad)} of {n} /{op} requests answered {bad[:3]}")
        stored = json.loads((await call(self.app, "/read", cookie)).body)
        if op == "plain":  # kept: a batch whose k is one of the N written values
            return wall, cpu, turns, int(stored["k"] in range(n)), False
        cart = stored.get("cart", [])
        kept = sum(cart.count(str(i)) == 1 for i in range(n))
        return wall, cpu, turns, kept, cart[:1] != ["seeded"] or len(cart) != kept + 1


@dataclass
class Cell:
    """One (store, N, op): wall and CPU seconds per save by round; each batch's items kept."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    bad: int = 0  # batches with an item twice or unknown, or the seeded item moved
    trips: float | None = None

    def side(self, arena: Arena, op: str, n: int, saves: int) -> Any:
        async def one_round() -> float:
            batches = [await arena.batch(op, n) for _ in range(max(1, saves // n))]
            self.kept += [b[3] for b in batches]
            self.bad += sum(b[4] for b in batches)
            self.cpu.append(sum(b[1] for b in batches) / len(batches) / n)
            return sum(b[0] for b in batches) / len(batches) / n

        return one_round


async def measure(kind: str, ctx: Context, ns: list[int], args: Any) -> dict[int, dict[str, Cell]]:
    """The timed pass on ``kind``; on a server, then the turns counted through a relay."""
    cells = {n: {op: Cell() for op in OPS} for n in ns}
    async with AsyncExitStack() as stack:
        if kind == "postgres":  # in a scratch schema, dropped at the end
            dsn = ctx.services.url(POSTGRES)
            url = await stack.enter_async_context(scratch_schema(dsn, "contention"))
        else:  # Redis keys expire in an hour (max_age)
            sqlite = f"sqlite:///{ctx.tmpdir / 'contention.sqlite3'}"
            url = {"memory": "memory://", "sqlite": sqlite}.get(kind) or ctx.services.url(REDIS)
        options = {"table": "bench_contention"} if kind == "postgres" else {}
        options = {"prefix": "bench:contention:"} if kind == "redis" else options
        await one_pass(url, options, cells, args)
        if (parts := urlsplit(url)).port:
            relay = RelayProcess(parts.hostname or "127.0.0.1", parts.port)
            stack.callback(relay.close)
            user, at, _ = parts.netloc.rpartition("@")
            through = parts._replace(netloc=f"{user}{at}127.0.0.1:{relay.port}").geturl()
            await one_pass(through, options, cells, args, relay)
    return cells


async def one_pass(url: str, options: Any, cells: Any, args: Any, relay: Any = None) -> None:
    """Time every cell; or, through a ``relay`` in front of the server, count its turns."""
    async with store_from_url(url, **options) as store:
        arena = Arena(store)
        for n, by_op in cells.items():
            for op in OPS * 2:  # uncounted: connections, handshakes, scripts, statements
                await arena.batch(op, n)
            if relay:
                for op, c in by_op.items():
                    turns = [await arena.batch(op, n, relay) for _ in range(args.count_batches)]
                    c.trips = sum(t[2] for t in turns) / (len(turns) * n)
                continue
            sides = {op: c.side(arena, op, n, args.saves) for op, c in by_op.items()}
            for op, wall in (await interleave(sides, args.rounds)).items():
                by_op[op].wall = wall
            log(f"    {n} writers: done")


def report(cells: dict[int, dict[str, Cell]]) -> tuple[list[list[Any]], dict[str, Any]]:
    """One store's table rows and data."""
    rows: list[list[Any]] = []
    data: dict[str, Any] = {}
    for n, by_op in cells.items():
        for op, c in by_op.items():
            wall = [a / b for a, b in zip(c.wall, by_op["plain"].wall, strict=True)]
            cpu = [a / b for a, b in zip(c.cpu, by_op["plain"].cpu, strict=True)]
            kept = f"{min(c.kept)}/{n}" + (f", {c.bad} bad batches" if c.bad else "")
            if op == "plain":
                kept = f"a written `k` in {sum(c.kept)}/{len(c.kept)} batches"
            trips = "-" if c.trips is None else f"{c.trips:.2f}"
            rows.append([n, op, kept, len(c.kept), fmt(c.wall, 1e6), fmt(wall, digits=2)])
            rows[-1] += [fmt(c.cpu, 1e6), fmt(cpu, digits=2), trips]
            data.setdefault(str(n), {})[op] = {
                "wall_us_rounds": [w * 1e6 for w in c.wall],
                "cpu_us_rounds": [x * 1e6 for x in c.cpu],
                "wall_vs_plain": statistics.median(wall), "cpu_vs_plain": statistics.median(cpu),
                "batches": len(c.kept), "worst_kept": min(c.kept), "kept": sum(c.kept),
                "bad_batches": c.bad, "round_trips": c.trips,
            }  # fmt: skip
    return rows, data


def run(ctx: Context, args: argparse.Namespace) -> Section:
    lines = [f"{args.rounds} interleaved rounds, {args.saves} timed saves per cell and round."]
    lines += ["", *__doc__.strip().splitlines()]
    data: dict[str, Any] = {"rounds": args.rounds, "saves": args.saves, "stores": {}}
    missed, held = [], []
    if unknown := set(stores := args.stores.split(",")) - set(STORES):
        raise SystemExit(f"--stores: no store {', '.join(unknown)}; known: {', '.join(STORES)}")
    for kind in stores:
        log(f"  {kind}")
        try:
            cells = asyncio.run(measure(kind, ctx, [int(n) for n in args.writers.split(",")], args))
        except Unavailable as exc:
            lines += ["", f"### {kind}", "", f"Skipped: {exc}."]
            data.setdefault("skipped", {})[kind] = str(exc)
            continue
        rows, data["stores"][kind] = report(cells)
        lines += ["", f"### {kind}", "", *table(HEAD, rows)]
        for n, by_op in cells.items():
            if min(by_op["append"].kept) < n or by_op["append"].bad:
                missed.append(f"{kind} x{n}")
            if min(by_op["reassign"].kept) == n:
                held.append(f"{kind} x{n}")
    if not data["stores"]:
        raise Unavailable("; ".join(data["skipped"].values()))
    verdict = f"**MISS** ({', '.join(missed)})" if missed else "PASS"
    control = f"**it did not** ({', '.join(held)}): the check proves nothing" if held else "it did"
    data.update(appends_kept=not missed, control_lost=not held)
    lines += [
        "",
        f"Goal: every append kept, none twice, on every store and N: {verdict}. The "
        f"`reassign` control must lose items (it is last writer wins): {control}.",
    ]
    return Section(TITLE, lines, data)

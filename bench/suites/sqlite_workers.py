"""SQLite under 2 uvicorn workers: two uvicorn processes on one SQLite file, loaded by 64
keep-alive connections (32 to each, one request in flight per connection, as a balancer
in front of ``--workers 2`` would spread them); requests/s, p99 and "database is locked",
ours against raw aiosqlite doing the floor's work (:mod:`bench.floors`) in the same
processes. Every config's servers start up front; cells interleave round by round.
The floor is the in-process suite's ``raw-sqlite``, whose write stores a changed value
each time, as a session's write does.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..apps import Built, Env, build, config
from ..harness import Context, Section, log
from ..services import uvicorn_server
from ..stats import Case, Goal, fmt, ratio_rows

TITLE = "SQLite under 2 uvicorn workers x 64 clients: requests/s, p99 [p10-p90 of rounds]"
CONFIGS = ["raw-sqlite", "ours-sqlite"]
ENDPOINTS = ("read", "write")
WORKERS = 2
CASES = [
    Case("SQLite read", "read", "raw-sqlite", "ours-sqlite", (Goal(0.85),)),
    Case("SQLite write", "write", "raw-sqlite", "ours-sqlite", (Goal(0.85),)),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, help="seconds per cell per round (3; quick 0.5)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 1)")
    parser.add_argument("--clients", type=int, default=64, help="connections in all (64)")


def app() -> Any:
    """``uvicorn --factory bench.suites.sqlite_workers:app``: SQLW_CONFIG on the file(s) in
    SQLW_TMPDIR (every worker of a config shares them). Lifespan startup builds it and
    writes its cookie to SQLW_COOKIE_FILE. An exception answers 500 with its text, so the
    client can count "database is locked"."""
    name, tmpdir = os.environ["SQLW_CONFIG"], os.environ["SQLW_TMPDIR"]
    built: list[Built] = []

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                built.append(await build(config(name), Env(redis_url="", tmpdir=tmpdir)))
                cookie = Path(os.environ["SQLW_COOKIE_FILE"])
                cookie.with_suffix(".tmp").write_bytes(built[0].cookie or b"")
                cookie.with_suffix(".tmp").replace(cookie)
                await send({"type": "lifespan.startup.complete"})
            await built[0].aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
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
            body = f"{type(exc).__name__}: {exc}".encode()
            await send({"type": "http.response.start", "status": 500, "headers": []})
            await send({"type": "http.response.body", "body": body})

    return asgi


class Cell:
    """One cell's load: requests/s, p99 in ms, errors and how many said "locked"."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors = 0
        self.locked = 0
        self.samples: list[str] = []


async def load(
    servers: list[tuple[int, bytes]], path: str, clients: int, seconds: float
) -> tuple[float, Cell]:
    """``clients`` keep-alive connections spread over ``servers``, one request in flight
    each, for ``seconds``: requests/s and the cell's latencies and errors."""
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench/1\r\n".encode()
        + (b"Cookie: " + cookie + b"\r\n" if cookie else b"")
        + b"\r\n"
        for _, cookie in servers
    ]
    conns = []
    for i in range(clients):
        port = servers[i % len(servers)][0]
        conns.append(
            (*await asyncio.open_connection("127.0.0.1", port), requests[i % len(servers)])
        )
    loop = asyncio.get_running_loop()
    cell, counted = Cell(), [True]

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> None:
        start = time.perf_counter()
        writer.write(req)
        head = await reader.readuntil(b"\r\n\r\n")
        at = head.lower().find(b"content-length:")
        length = int(head[at + 15 : head.index(b"\r\n", at)]) if at >= 0 else 0
        body = await reader.readexactly(length)
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

    counted[0] = False
    for conn in conns:  # each connection once, untimed
        await one(*conn)
    counted[0] = True
    started = loop.time()
    await asyncio.gather(*(worker(i, started + seconds) for i in range(clients)))
    elapsed = loop.time() - started
    for _, writer, _ in conns:
        writer.close()
    return len(cell.latencies) / elapsed, cell


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else float("nan")


def run(ctx: Context, args: argparse.Namespace) -> Section:
    seconds = args.seconds or (0.5 if ctx.quick else 3.0)
    rounds = args.rounds or (1 if ctx.quick else 3)
    rps: dict[str, dict[str, list[float]]] = {n: {e: [] for e in ENDPOINTS} for n in CONFIGS}
    tail: dict[str, dict[str, list[float]]] = {n: {e: [] for e in ENDPOINTS} for n in CONFIGS}
    errors = {n: {e: 0 for e in ENDPOINTS} for n in CONFIGS}
    locked = {n: {e: 0 for e in ENDPOINTS} for n in CONFIGS}
    samples: list[str] = []
    loads: list[float] = []
    with ExitStack() as stack:
        servers: dict[str, list[tuple[int, bytes]]] = {}
        for name in CONFIGS:
            shared = ctx.tmpdir / f"workers-{name}"  # one SQLite file per config
            shared.mkdir(exist_ok=True)
            servers[name] = []
            for worker in range(WORKERS):  # one after the other: no race to create the file
                cookie = shared / f"cookie-{worker}"
                env = {
                    "SQLW_CONFIG": name,
                    "SQLW_TMPDIR": str(shared),
                    "SQLW_COOKIE_FILE": str(cookie),
                }
                base, _ = stack.enter_context(
                    uvicorn_server("bench.suites.sqlite_workers:app", env)
                )
                servers[name].append((int(base.rsplit(":", 1)[1]), cookie.read_bytes()))
        log(f"  {len(CONFIGS)} x {WORKERS} uvicorn servers, {rounds} rounds x {seconds} s per cell")

        async def drive() -> None:
            for name in CONFIGS:  # warm-up
                for endpoint in ENDPOINTS:
                    await load(servers[name], f"/{endpoint}", args.clients, 0.3)
            for number in range(rounds):
                loads.append(os.getloadavg()[0])
                order = CONFIGS if number % 2 == 0 else CONFIGS[::-1]
                for name in order:
                    for endpoint in ENDPOINTS:
                        value, cell = await load(
                            servers[name], f"/{endpoint}", args.clients, seconds
                        )
                        rps[name][endpoint].append(value)
                        tail[name][endpoint].append(p99(cell.latencies) * 1000)
                        errors[name][endpoint] += cell.errors
                        locked[name][endpoint] += cell.locked
                        samples.extend(f"{name} /{endpoint}: {s}" for s in cell.samples)

        asyncio.run(drive())
    rows = ratio_rows(rps, CASES, higher_is_better=True)
    lines = [
        f"{WORKERS} uvicorn processes (httptools) on one SQLite file per configuration; "
        f"{args.clients} keep-alive connections, {args.clients // WORKERS} to each, one request "
        f"in flight each; {rounds} rounds x {seconds:g} s per cell, configurations interleaved. "
        f"Every connection shares one session (ours) or one row (the floors). "
        f"1-minute load average at each round: {', '.join(f'{v:.1f}' for v in loads)}.",
        "",
        "| configuration | read req/s | read p99 ms | write req/s | write p99 ms | errors | "
        '"database is locked" |',
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| `{n}` | {fmt(rps[n]['read'], digits=0)} | {fmt(tail[n]['read'])} | "
            f"{fmt(rps[n]['write'], digits=0)} | {fmt(tail[n]['write'])} | "
            f"{sum(errors[n].values())} | {sum(locked[n].values())} |"
            for n in CONFIGS
        ),
        "",
        "Throughput ratios (ours / floor; higher is better). Goal: ≥ 0.85x the floor's "
        'requests/s and 0 "database is locked".',
        "",
        "| case | ours | against | ratio [p10-p90] | goal | verdict |",
        "|---|---|---|---:|---|---|",
        *(
            f"| {r['case']} | `{r['config']}` | `{r['floor']}` | {r['ratio']:.2f}x "
            f"[{r['p10']:.2f}-{r['p90']:.2f}] | {r['goal']} | {r['verdict']} |"
            for r in rows
        ),
    ]
    if samples:
        lines += ["", "Errors seen: " + "; ".join(samples[:5])]
    data = {
        "workers": WORKERS,
        "clients": args.clients,
        "seconds": seconds,
        "rounds": rounds,
        "load_average": loads,
        "rps": rps,
        "p99_ms": tail,
        "errors": errors,
        "locked": locked,
        "ratios": rows,
    }
    return Section(TITLE, lines, data)

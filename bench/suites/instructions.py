"""User-space instructions per request of in-process cells (cachegrind's ``I refs``, all
threads): counts the machine's load does not move, to show where a cost is. Verdicts are
issue 24's goals on this basis, for reference (``inprocess`` judges on time). Each cell runs
twice, ``--low`` and ``--high`` requests after one warm-up; the difference drops start-up."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from math import nan
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from ..apps import ENDPOINTS, Env, build, config
from ..asgi import ASGIApp, NotOK, headers, receive, scope
from ..harness import HERE, Context, Section, log, sized, skipped, table
from ..services import REDIS, Unavailable
from .inprocess import CASES

TITLE = "In-process instructions per request (cachegrind, user space), ratios to the floors"
WARM_UP = 200  # requests before the counted ones, in both runs: caches, lazy set-up
VALGRIND = "valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null".split()
# A cell's floor is its issue-24 case's (bare unless a raw store is named), its goals too.
FLOORS = {f"{n}/{c.endpoint}": c.floor for c in CASES for n in (c.config, *c.peers)}
GOALS = {f"{c.config}/{c.endpoint}": c.goals for c in CASES if c.goals}


def layer(wraps_send: bool) -> Any:
    """Ablation: a pure ASGI middleware that does nothing (what any layer costs), or one
    that only wraps ``send`` in a closure (as a session middleware must)."""

    def around(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Any, receive: Any, send: Any) -> None:
            async def wrapped(message: Any) -> None:
                await send(message)

            await app(scope, receive, wrapped if wraps_send else send)

        return middleware

    return around


async def state_view(request: Request) -> Response:
    request.state  # noqa: B018 -- the State object ``await request.state.session`` pays for
    return PlainTextResponse("alice")


LAYERS = {"bare+pass-through": layer(False), "bare+wrapped-send": layer(True)}  # around bare
MEMORY = "bare ours-memory starlette starsessions-memory".split()
STORES = "ours-cookie raw-sqlite ours-sqlite raw-redis ours-redis starsessions-redis".split()
CELLS = [f"{n}/{e}" for n in MEMORY for e in ENDPOINTS]
CELLS += [f"{n}/untouched" for n in (*LAYERS, "bare+state")]
CELLS += [f"{n}/{e}" for n in STORES for e in ("read", "write")]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sized(parser, low=(200, 50, "counted requests, first run"), high=(600, 150, "second run"))
    parser.add_argument("--only", help="comma-separated cells, with their floors: bare/read,...")


async def drive(cell: str, n: int, env: Env) -> None:
    """The driver: ``WARM_UP + n`` requests to one cell, called as bench.asgi's ``timed``."""
    name, endpoint = cell.split("/")
    built = await build(config(name.split("+")[0]), env)
    app = LAYERS[name](built.app) if name in LAYERS else built.app  # outside Starlette's stack
    if name == "bare+state":
        app = Starlette(routes=[Route("/untouched", state_view)])
    request_headers, send, path = headers(built.cookie), NotOK(), f"/{endpoint}"
    try:
        for _ in range(WARM_UP + n):
            await app(scope(path, request_headers), receive, send)
        send.check(WARM_UP + n, path)
    finally:
        await built.aclose()  # aiosqlite's thread ends, so does the driver


def count(cell: str, n: int, tmp: Path, redis: str) -> int:
    """The instructions of one driver run, in a scratch directory (SQLite's) of its own."""
    (scratch := tmp / f"ir-{cell.replace('/', '-')}-{n}").mkdir()
    argv = [*VALGRIND, sys.executable, "-m", __name__, cell, str(n), str(scratch), redis]
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same hashes, so dicts, in both runs
    done = subprocess.run(argv, cwd=HERE.parent, env=env, capture_output=True, check=False)
    if done.returncode or not (found := re.search(rb"I\s+refs:\s+([\d,]+)", done.stderr)):
        raise RuntimeError(f"{cell} x {n}: exit {done.returncode}\n{done.stderr[-2000:]!r}")
    return int(found[1].replace(b",", b""))


def run(ctx: Context, args: argparse.Namespace) -> Section:
    if not shutil.which("valgrind"):
        return skipped(TITLE, "valgrind is not installed (Debian: apt-get install valgrind)")
    cells = [c for c in CELLS if not args.only or c in args.only.split(",")]
    skips, redis, runs = {}, "", (args.low, args.high)
    low, high = runs
    try:
        redis = ctx.services.url(REDIS) if any("redis" in c for c in cells) else ""
    except Unavailable as exc:
        skips = {c: str(exc) for c in cells if "redis" in c}
        cells = [c for c in cells if c not in skips]
    log(f"  {len(cells)} cells x 2 runs under cachegrind, {os.cpu_count()} at a time")
    pool = ThreadPoolExecutor(os.cpu_count())  # valgrind runs a program's threads one at a time
    try:
        jobs = {(c, n): pool.submit(count, c, n, ctx.tmpdir, redis) for c in cells for n in runs}
        ir = {c: (jobs[c, low].result(), jobs[c, high].result()) for c in cells}
    finally:  # on a failure or a stop: no new driver starts, the running ones end first
        pool.shutdown(cancel_futures=True)
    per = {cell: (b - a) / (high - low) for cell, (a, b) in ir.items()}
    floors = {c: FLOORS.get(c, "bare") + c[c.index("/") :] for c in cells}
    ratios = {c: per[c] / per[floors[c]] if floors[c] in per else nan for c in cells}
    rows, figures = [], {}
    for cell in cells:
        e, mine, goals = cell.split("/")[1], ratios[cell], GOALS.get(cell, ())
        peers = {g.peer: ratios.get(f"{g.peer}/{e}", nan) for g in goals if g.peer}
        limits = [g.limit * peers[g.peer] if g.peer else g.limit for g in goals]
        met = all(mine <= x for x in limits)  # a missing floor or peer: nan, and not met
        verdict = ("PASS" if met else "MISS") + " (instructions)" if goals else "info"
        figures[cell] = dict(low_high=ir[cell], per_request=per[cell], ratio=mine, verdict=verdict)
        vs = "".join(f" ({mine / r:.2f}x `{p}`)" for p, r in peers.items())  # what it judges
        shown = [f"`{cell}`", f"{per[cell] / 1000:,.1f}", f"`{floors[cell]}`", f"{mine:.2f}x{vs}"]
        shown.append(" and ".join(g.text("≤") for g in goals) or "-")
        rows.append([*shown, verdict if met else f"**{verdict}**"])
    head = ["cell", "k instructions / request:", "against", "ratio:", "goal", "verdict"]
    lines = [f"(Ir({high}) - Ir({low})) / {high - low}, after {WARM_UP} warm-up requests.", ""]
    lines += table(head, rows)
    lines += ["", "Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in skips.items())] if skips else []
    data = {"low": low, "high": high, "warm_up": WARM_UP, "cells": figures, "skipped": skips}
    return Section(TITLE, lines, data)


if __name__ == "__main__":  # the driver: CELL N SCRATCH_DIR REDIS_URL
    asyncio.run(drive(sys.argv[1], int(sys.argv[2]), Env(sys.argv[4], sys.argv[3])))

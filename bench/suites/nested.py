"""What finding nested changes costs a read-only request (issue 13, defect 12): a view
that reads a list from the session and leaves it alone, with ``detect_nested_changes``
on (the default: the list's JSON is compared with what was loaded when the response
starts) and off, for lists of about 1 KB, 10 KB and 100 KB; and a view that reads only a
string, which costs nothing either way. MemoryStore, in-process, interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from asgi_sessions import MemoryStore, SessionMiddleware

from ..apps import SECRET
from ..asgi import call, timed
from ..harness import Context, Section
from ..stats import interleave, spread

TITLE = "Nested-change detection: the cost on read-only requests"
SIZES = (1_000, 10_000, 100_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="interleaved rounds (15; quick 3)")
    parser.add_argument("--requests", type=int, help="requests per round (200; quick 30)")


def app(detect: bool, size: int) -> Starlette:
    async def seed(request: Request) -> PlainTextResponse:
        session = await request.state.session
        # A list of short strings about ``size`` bytes of JSON: a cart, flash messages.
        session["cart"] = [f"item-{n:06d}" for n in range(size // 14)]
        session["user"] = "alice"
        return PlainTextResponse("seeded")

    async def read_list(request: Request) -> PlainTextResponse:
        session = await request.state.session
        return PlainTextResponse(str(len(session["cart"])))

    async def read_string(request: Request) -> PlainTextResponse:
        session = await request.state.session
        return PlainTextResponse(session["user"])

    routes = [Route("/seed", seed), Route("/list", read_list), Route("/string", read_string)]
    middleware = Middleware(
        SessionMiddleware, secret_key=SECRET, store=MemoryStore(), detect_nested_changes=detect
    )
    return Starlette(routes=routes, middleware=[middleware])


async def measure(rounds: int, requests: int) -> dict[str, list[float]]:
    sides: dict[str, Any] = {}
    for size in SIZES:
        for detect in (True, False):
            built = app(detect, size)
            cookie = (await call(built, "/seed")).set_cookie()
            for path in ("/list", "/string") if size == SIZES[0] else ("/list",):

                async def one_round(
                    built: Any = built, path: str = path, cookie: Any = cookie
                ) -> float:
                    times = await timed(built, path, cookie, requests)
                    return statistics.median(times)

                sides[f"{path[1:]} {size // 1000} KB, detect={'on' if detect else 'off'}"] = (
                    one_round
                )
    return await interleave(sides, rounds)


def _round(built: Any, path: str, cookie: Any, requests: int) -> Any:
    async def one_round() -> float:
        return statistics.median(await timed(built, path, cookie, requests))

    return one_round


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds = args.rounds or (3 if ctx.quick else 15)
    requests = args.requests or (30 if ctx.quick else 200)
    results = asyncio.run(measure(rounds, requests))
    lines = [
        f"µs per read-only request (median of {rounds} interleaved rounds of {requests}; "
        "p10-p90 of the round medians). Nothing is written in any of them.",
        "",
        "| the view reads | detect on | detect off | cost of detection |",
        "|---|---:|---:|---:|",
    ]
    for size in SIZES:
        on = results[f"list {size // 1000} KB, detect=on"]
        off = results[f"list {size // 1000} KB, detect=off"]
        lines.append(
            f"| a list of {size // 1000} KB | {_cell(on)} | {_cell(off)} | "
            f"+{statistics.median(on) - statistics.median(off):.1f} µs |"
        )
    on, off = results["string 1 KB, detect=on"], results["string 1 KB, detect=off"]
    lines.append(
        f"| a string | {_cell(on)} | {_cell(off)} | "
        f"+{statistics.median(on) - statistics.median(off):.1f} µs |"
    )
    return Section(TITLE, lines, {"rounds": rounds, "requests": requests, "results": results})


def _cell(values: list[float]) -> str:
    median, low, high = spread(values)
    return f"{median:.1f} [{low:.1f}-{high:.1f}]"

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

from ..apps import SECRET, seed
from ..asgi import median_round
from ..harness import Context, Section, sized, table
from ..stats import interleave, spread

TITLE = "Nested-change detection: the cost on read-only requests"
SIZES = (1_000, 10_000, 100_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sized(parser, rounds=(15, 3, "interleaved rounds"), requests=(200, 30, "requests per round"))


def app(detect: bool, size: int) -> Starlette:
    async def fill(request: Request) -> PlainTextResponse:
        session = await request.state.session
        # A list of short strings about ``size`` bytes of JSON: a cart, flash messages.
        session["cart"] = [f"item-{n:06d}" for n in range(size // 14)]
        session["user"] = "alice"
        return PlainTextResponse("seeded")

    async def read_list(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len((await request.state.session)["cart"])))

    async def read_string(request: Request) -> PlainTextResponse:
        return PlainTextResponse((await request.state.session)["user"])

    routes = [Route("/seed", fill), Route("/list", read_list), Route("/string", read_string)]
    store = MemoryStore()
    mw = Middleware(SessionMiddleware, secret_key=SECRET, store=store, detect_nested_changes=detect)
    return Starlette(routes=routes, middleware=[mw])


async def measure(rounds: int, requests: int) -> dict[str, list[float]]:
    sides: dict[str, Any] = {}
    for size in SIZES:
        for detect in (True, False):
            built = app(detect, size)
            cookie = await seed(built)
            for what in ("list", "string") if size == SIZES[0] else ("list",):
                name = f"{what} {size // 1000} KB, detect={'on' if detect else 'off'}"
                sides[name] = median_round(built, f"/{what}", cookie, requests)
    return await interleave(sides, rounds)


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds, requests = args.rounds, args.requests
    results = asyncio.run(measure(rounds, requests))
    rows = []
    cases = [(f"a list of {s // 1000} KB", f"list {s // 1000} KB") for s in SIZES]
    for label, what in [*cases, ("a string", "string 1 KB")]:
        on, off = results[f"{what}, detect=on"], results[f"{what}, detect=off"]
        cost = statistics.median(on) - statistics.median(off)
        rows.append([label, *("{:.1f} [{:.1f}-{:.1f}]".format(*spread(v)) for v in (on, off))])
        rows[-1].append(f"+{cost:.1f} µs")
    lines = [
        f"µs per read-only request (median of {rounds} interleaved rounds of {requests}; "
        "p10-p90 of the round medians). Nothing is written in any of them.",
        "",
        *table(["the view reads", "detect on:", "detect off:", "cost of detection:"], rows),
    ]
    return Section(TITLE, lines, {"rounds": rounds, "requests": requests, "results": results})

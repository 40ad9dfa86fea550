"""Rolling expiry without a write per request: store writes per request when every
request renews the session (``save_every_request=True``), with the default
``renew_interval``, with it off (``renew_interval=0``), and starsessions' ``rolling=True``.

Each session makes a request every ``--gap`` seconds of a simulated clock (the stores
take an injected clock) for ``--minutes``; a write is a store save (ours: counted at the
store; starsessions: its store's ``write``). Counts, not timings: the figures are exact.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from starlette.middleware import Middleware

from asgi_sessions import MemoryStore, SessionMiddleware
from asgi_sessions.middleware import DEFAULT_RENEW_INTERVAL

from ..apps import MAX_AGE, SECRET, Clock, counting, seed, session_app, session_data
from ..asgi import call
from ..harness import Context, Section, sized, table

TITLE = "Rolling expiry: store writes per request"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sized(parser, sessions=(200, 20, "sessions"))
    parser.add_argument("--minutes", type=float, default=30.0, help="simulated minutes (30)")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between requests")


async def measure(
    variant: str, sessions: int, minutes: float, gap: float, **options: Any
) -> dict[str, int]:
    clock = Clock()
    if variant == "starsessions":
        from starsessions import SessionMiddleware as Starsessions
        from starsessions.stores.memory import InMemoryStore

        store = counting(InMemoryStore())
        mw = Middleware(
            Starsessions, store=store, rolling=True, lifetime=MAX_AGE, cookie_https_only=False
        )
    else:
        store = counting(MemoryStore(clock=clock, max_entries=1_000_000))
        mw = Middleware(
            SessionMiddleware, secret_key=SECRET, store=store, save_every_request=True, **options
        )
    app = session_app(variant, [mw], session_data())
    cookies = [await seed(app) for _ in range(sessions)]
    seeded, steps = store.writes, int(minutes * 60 / gap)
    for _ in range(steps):
        clock.now += gap
        for cookie in cookies:
            if (reply := await call(app, "/read", cookie)).status != 200:
                raise RuntimeError(f"a rolling read answered {reply.status}")
    return {"requests": steps * sessions, "writes": store.writes - seeded}


def run(ctx: Context, args: argparse.Namespace) -> Section:
    sessions, minutes, gap = args.sessions, args.minutes, args.gap
    interval = DEFAULT_RENEW_INTERVAL
    cells = {
        f"ours, renew_interval={interval:g} s (default)": asyncio.run(
            measure("ours", sessions, minutes, gap)
        ),
        "ours, renew_interval=0": asyncio.run(
            measure("ours", sessions, minutes, gap, renew_interval=0)
        ),
        "starsessions, rolling=True": asyncio.run(measure("starsessions", sessions, minutes, gap)),
    }
    rows = [
        [name, f"{c['requests']:,}", f"{c['writes']:,}", f"{c['writes'] / c['requests']:.3f}"]
        for name, c in cells.items()
    ]
    for row, c in zip(rows, cells.values(), strict=True):
        row.append(f"{c['writes'] / sessions / (minutes * 60 / interval):.2f}")
    head = ["configuration", "requests:", "store writes:", "writes per request:"]
    lines = [
        f"{sessions} sessions, each reading every {gap:g} s of a simulated clock for "
        f"{minutes:g} minutes (`save_every_request=True`; starsessions `rolling=True`). "
        f"Goal (issue 16): at most 1 write per session per {interval:g} s "
        "interval with the default setting.",
        "",
        *table([*head, f"writes per session per {interval:g} s:"], rows),
    ]
    data = {"sessions": sessions, "minutes": minutes, "gap": gap, "results": cells}
    return Section(TITLE, lines, data, readme=lines)

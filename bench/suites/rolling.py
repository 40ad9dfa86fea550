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
import time
from typing import Any

from starlette.middleware import Middleware

from asgi_sessions import MemoryStore, SessionMiddleware
from asgi_sessions.middleware import DEFAULT_RENEW_INTERVAL

from ..apps import SECRET, session_app, session_data
from ..asgi import call
from ..harness import Context, Section

TITLE = "Rolling expiry: store writes per request"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, help="sessions (200; quick 20)")
    parser.add_argument("--minutes", type=float, default=30.0, help="simulated minutes (30)")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between requests")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class CountingStore(MemoryStore):
    """A MemoryStore that counts what reaches it: every create, save and rotation."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock, max_entries=1_000_000)
        self.writes = 0

    async def write(self, store_id: str, change: Any) -> Any:
        self.writes += 1
        return await super().write(store_id, change)


async def ours(sessions: int, minutes: float, gap: float, **options: Any) -> dict[str, Any]:
    clock = Clock()
    store = CountingStore(clock)
    middleware = Middleware(
        SessionMiddleware, secret_key=SECRET, store=store, save_every_request=True, **options
    )
    app = session_app("ours", [middleware], session_data())
    return await drive(app, store, clock, sessions, minutes, gap)


async def starsessions(sessions: int, minutes: float, gap: float) -> dict[str, Any]:
    from starsessions import SessionMiddleware as StarsessionsMiddleware
    from starsessions.stores.memory import InMemoryStore

    class Counting(InMemoryStore):
        writes = 0

        async def write(self, *args: Any, **kwargs: Any) -> str:
            Counting.writes += 1
            return await super().write(*args, **kwargs)  # type: ignore[no-any-return]

    store = Counting()
    middleware = Middleware(
        StarsessionsMiddleware, store=store, rolling=True, lifetime=14 * 24 * 3600,
        cookie_https_only=False,
    )  # fmt: skip
    app = session_app("starsessions", [middleware], session_data())
    result = await drive(app, store, Clock(), sessions, minutes, gap)
    result["writes"] = Counting.writes - result["seed_writes"]
    return result


async def drive(
    app: Any, store: Any, clock: Clock, sessions: int, minutes: float, gap: float
) -> dict[str, Any]:
    cookies = []
    for _ in range(sessions):
        reply = await call(app, "/seed")
        cookies.append(reply.set_cookie())
    seed_writes = getattr(store, "writes", 0)
    requests = 0
    steps = int(minutes * 60 / gap)
    for _ in range(steps):
        clock.now += gap
        for cookie in cookies:
            reply = await call(app, "/read", cookie)
            if reply.status != 200:
                raise RuntimeError(f"a rolling read answered {reply.status}")
            requests += 1
    writes = getattr(store, "writes", 0) - seed_writes
    return {"requests": requests, "writes": writes, "seed_writes": seed_writes}


def run(ctx: Context, args: argparse.Namespace) -> Section:
    sessions = args.sessions or (20 if ctx.quick else 200)
    minutes, gap = args.minutes, args.gap
    cells = {
        f"ours, renew_interval={DEFAULT_RENEW_INTERVAL:g} s (default)": asyncio.run(
            ours(sessions, minutes, gap)
        ),
        "ours, renew_interval=0": asyncio.run(ours(sessions, minutes, gap, renew_interval=0)),
        "starsessions, rolling=True": asyncio.run(starsessions(sessions, minutes, gap)),
    }
    intervals = minutes * 60 / DEFAULT_RENEW_INTERVAL
    lines = [
        f"{sessions} sessions, each reading every {gap:g} s of a simulated clock for "
        f"{minutes:g} minutes (`save_every_request=True`; starsessions `rolling=True`). "
        f"Goal (issue 16): at most 1 write per session per {DEFAULT_RENEW_INTERVAL:g} s "
        "interval with the default setting.",
        "",
        "| configuration | requests | store writes | writes per request "
        f"| writes per session per {DEFAULT_RENEW_INTERVAL:g} s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, cell in cells.items():
        per_interval = cell["writes"] / sessions / intervals
        lines.append(
            f"| {name} | {cell['requests']:,} | {cell['writes']:,} | "
            f"{cell['writes'] / cell['requests']:.3f} | {per_interval:.2f} |"
        )
    data = {"sessions": sessions, "minutes": minutes, "gap": gap, "results": cells}
    return Section(TITLE, lines, data, readme=lines)

"""Ours with a CookieStore against Starlette's SessionMiddleware, head to head in-process
(read and write one key, interleaved), and the largest session that still fits in a
4096-byte cookie, with and without compression.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import string
from collections.abc import Callable
from typing import Any

from ..apps import SECRET, Built, Env, build, config
from ..asgi import call, timed
from ..harness import Context, Section
from ..stats import interleave, spread
from ..storeops import cookie_compression

TITLE = "CookieStore against Starlette's signed cookie"
WORDS = [
    "en-GB",
    "dark",
    "light",
    "Europe/London",
    "admin",
    "editor",
    "viewer",
    "sku-1042",
    "checkout",
    "basket",
    "/dashboard",
    "/settings/profile",
    "true",
    "false",
    "grid",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="interleaved rounds (31; quick 4)")
    parser.add_argument("--requests", type=int, help="requests per round (300; quick 50)")


async def speed(rounds: int, requests: int, tmpdir: str) -> dict[str, list[float]]:
    """Per endpoint, the per-round ratio of ours' median request to Starlette's."""
    env = Env(redis_url="", tmpdir=tmpdir)
    built: dict[str, Built] = {n: await build(config(n), env) for n in ("starlette", "ours-cookie")}
    ratios = {}
    for endpoint in ("read", "write"):

        def side(b: Built, endpoint: str = endpoint) -> Any:
            async def one_round() -> float:
                return statistics.median(await timed(b.app, f"/{endpoint}", b.cookie, requests))

            return one_round

        sides = {name: side(b) for name, b in built.items()}
        await interleave(sides, 2)  # warm-up
        samples = await interleave(sides, rounds)
        ratios[endpoint] = [
            a / b for a, b in zip(samples["ours-cookie"], samples["starlette"], strict=True)
        ]
    return ratios


def typical(size: int) -> dict[str, str]:
    """``size`` entries of short strings, as apps keep (preferences, flags, ids)."""
    rng = random.Random(5)
    return {f"pref_{i}": rng.choice(WORDS) for i in range(size)}


def incompressible(size: int) -> dict[str, str]:
    """One random string of ``size`` printable ASCII characters (no quotes or backslashes)."""
    rng = random.Random(7)
    alphabet = "".join(c for c in string.printable[:94] if c not in '"\\')
    return {"blob": "".join(rng.choice(alphabet) for _ in range(size))}


async def fits(data: dict[str, str], compress: bool) -> bool:
    from asgi_sessions import CookieStore, SessionMiddleware, SessionTooLarge

    async def fill(scope: dict[str, Any], receive: Any, send: Any) -> None:
        (await scope["session"]).update(data)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app = SessionMiddleware(fill, secret_key=SECRET, store=CookieStore())  # type: ignore[arg-type]
    with cookie_compression(compress):
        try:
            cookie = (await call(app, "/")).set_cookie()
        except SessionTooLarge:
            return False
    assert cookie is not None and len(cookie) <= 4096
    return True


async def largest(make: Callable[[int], dict[str, str]], compress: bool) -> int:
    """Bytes of compact JSON of the largest ``make(n)`` that fits (doubling, then bisecting)."""
    low, high = 1, 1
    while await fits(make(high), compress):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if await fits(make(middle), compress) else (low, middle)
    return len(json.dumps(make(low), separators=(",", ":")).encode())


def starlette_largest(make: Callable[[int], dict[str, str]]) -> int:
    """Starlette sends any size: the largest whose header stays within 4096 bytes."""
    overhead = len("session=; path=/; Max-Age=1209600; httponly; samesite=lax") + 1 + 6 + 1 + 27
    low, high = 1, 4096
    while high - low > 1:
        middle = (low + high) // 2
        size = overhead + 4 * ((len(json.dumps(make(middle)).encode()) + 2) // 3)  # base64
        low, high = (middle, high) if size <= 4096 else (low, middle)
    return len(json.dumps(make(low), separators=(",", ":")).encode())


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds = args.rounds or (4 if ctx.quick else 31)
    requests = args.requests or (50 if ctx.quick else 300)
    ratios = asyncio.run(speed(rounds, requests, str(ctx.tmpdir)))
    lines = [
        f"{rounds} interleaved rounds x {requests} requests; ratio of median requests, "
        "ours-cookie / starlette (lower is better).",
        "",
        "| endpoint | ours / Starlette [p10-p90] | goal |",
        "|---|---:|---|",
    ]
    for endpoint, goal in (("read", 0.8), ("write", 1.0)):
        med, p10, p90 = spread(ratios[endpoint])
        verdict = "PASS" if med <= goal else "**MISS**"
        lines.append(f"| {endpoint} | {med:.2f}x [{p10:.2f}-{p90:.2f}] | ≤ {goal}x: {verdict} |")
    lines += [
        "",
        "Largest session in a 4096-byte Set-Cookie, bytes of compact JSON:",
        "",
        "| session | compressed | uncompressed | Starlette |",
        "|---|---:|---:|---:|",
    ]
    capacity = {}
    for label, make in (("dict of short strings", typical), ("random ASCII", incompressible)):
        zipped = asyncio.run(largest(make, compress=True))
        plain = asyncio.run(largest(make, compress=False))
        capacity[label] = (zipped, plain, starlette_largest(make))
        lines.append(f"| {label} | " + " | ".join(f"{v:,}" for v in capacity[label]) + " |")
    return Section(TITLE, lines, {"ratios": ratios, "capacity": capacity})

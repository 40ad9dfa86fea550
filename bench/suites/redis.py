"""RedisStore against raw redis-py on one connection: a load against a GET of the same size,
a save of one changed key against GET + SET, and a 100 KB session against a 1 KB one
(mean wall and CPU microseconds per call, medians over interleaved rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ..harness import Context, Section
from ..services import REDIS
from ..stats import time_ops
from ..storeops import change

TITLE = "RedisStore against raw redis-py"
KEY_SMALL, KEY_LARGE = "small" * 9, "large" * 9


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="interleaved rounds (15; quick 3)")
    parser.add_argument("--ops", type=int, help="calls per round (200; quick 50)")


def session(size: int) -> dict[str, str]:
    """About ``size`` bytes of JSON-encoded values, 100 bytes each."""
    return {f"key{i:05d}": json.dumps("x" * 96) for i in range(max(1, size // 110))}


async def figures(url: str, rounds: int, ops: int) -> dict[str, tuple[float, float]]:
    import redis.asyncio

    from asgi_sessions.stores.redis import RedisStore

    # Configured as RedisStore.from_url configures its own client; the raw calls share it.
    client = redis.asyncio.Redis.from_url(url, decode_responses=True)
    store = RedisStore(client, prefix="bench:store:")
    one = {"key00000": json.dumps("y" * 96)}
    blob = json.dumps(session(1024))
    try:
        await store.save(KEY_SMALL, change(session(1024), create=True))
        await store.save(KEY_LARGE, change(session(100 * 1024), create=True))
        await client.set("bench:raw", blob)
        assert len((await store.load(KEY_SMALL)).data) == len(session(1024))  # type: ignore[union-attr]

        async def raw_get_set() -> None:
            await client.get("bench:raw")
            await client.set("bench:raw", blob, ex=3600)

        async def load_save() -> None:
            await store.load(KEY_SMALL)
            await store.save(KEY_SMALL, change(one, create=False))

        ops_by_name: dict[str, Callable[[], Awaitable[Any]]] = {
            "load (1 KB)": lambda: store.load(KEY_SMALL),
            "raw GET (1 KB)": lambda: client.get("bench:raw"),
            "save 1 changed key (1 KB)": lambda: store.save(KEY_SMALL, change(one, create=False)),
            "save 1 changed key (100 KB)": lambda: store.save(KEY_LARGE, change(one, create=False)),
            "raw GET + SET (1 KB)": raw_get_set,
            "load + save 1 changed key": load_save,
        }
        return await time_ops(ops_by_name, rounds, ops)
    finally:
        await client.delete(*[k async for k in client.scan_iter("bench:*")])
        await client.aclose()


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds = args.rounds or (3 if ctx.quick else 15)
    ops = args.ops or (50 if ctx.quick else 200)
    url = ctx.services.url(REDIS)
    m = asyncio.run(figures(url, rounds, ops))
    lines = [
        f"Medians of {rounds} interleaved rounds x {ops} calls, one connection (hiredis parser).",
        "",
        "| operation | wall us | CPU us |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {w * 1e6:.1f} | {c * 1e6:.1f} |" for name, (w, c) in m.items()]
    lines += ["", "| ratio | wall | CPU | goal |", "|---|---:|---:|---|"]
    for label, a, b, goal in (
        ("load / GET", "load (1 KB)", "raw GET (1 KB)", 1.15),
        ("save 1 key / (GET + SET)", "save 1 changed key (1 KB)", "raw GET + SET (1 KB)", 1.15),
        ("load + save / (GET + SET)", "load + save 1 changed key", "raw GET + SET (1 KB)", 1.15),
        (
            "save, 100 KB / 1 KB session",
            "save 1 changed key (100 KB)",
            "save 1 changed key (1 KB)",
            1.5,
        ),
    ):
        wall = m[a][0] / m[b][0]
        verdict = "PASS" if wall <= goal else "**MISS**"
        lines.append(
            f"| {label} | {wall:.2f}x | {m[a][1] / m[b][1]:.2f}x | ≤ {goal}x wall: {verdict} |"
        )
    return Section(TITLE, lines, {"rounds": rounds, "ops": ops, "seconds": m})

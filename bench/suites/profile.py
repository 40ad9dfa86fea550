"""One configuration's endpoint under pyinstrument, driven as the in-process suite drives
it; prints the call tree (``bare`` gives the baseline to subtract).
"""

from __future__ import annotations

import argparse
import asyncio

from ..apps import Env, build, config
from ..asgi import timed
from ..harness import Context, Section, sized
from ..pg import POSTGRES
from ..services import REDIS

TITLE = "Profile of one cell"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a configuration name, e.g. ours-memory")
    parser.add_argument("endpoint", choices=("untouched", "read", "write"))
    sized(parser, requests=(20_000, 500, "profiled requests"))
    parser.add_argument("--html", help="also write pyinstrument's HTML report here")


async def profile(args: argparse.Namespace, env: Env, requests: int) -> str:
    from pyinstrument import Profiler

    built = await build(config(args.config), env)
    try:
        await timed(built.app, f"/{args.endpoint}", built.cookie, 500)  # warm-up
        profiler = Profiler(interval=0.0001, async_mode="disabled")
        profiler.start()
        await timed(built.app, f"/{args.endpoint}", built.cookie, requests)
        profiler.stop()
    finally:
        await built.aclose()
    if args.html:
        with open(args.html, "w") as f:
            f.write(profiler.output_html())
    return str(profiler.output_text(unicode=True, color=False, show_all=False))


def run(ctx: Context, args: argparse.Namespace) -> Section:
    requests = args.requests
    chosen = config(args.config)
    env = Env(
        redis_url=ctx.services.url(REDIS) if chosen.needs_redis else "",
        postgres_url=ctx.services.url(POSTGRES) if chosen.needs_postgres else "",
        tmpdir=str(ctx.tmpdir),
    )
    tree = asyncio.run(profile(args, env, requests))
    lines = [f"{requests} requests to /{args.endpoint} of `{args.config}`.", "", "```", tree, "```"]
    return Section(f"{TITLE}: {args.config} {args.endpoint}", lines)

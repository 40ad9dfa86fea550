"""Profile one configuration's endpoint in-process with pyinstrument.

    .venv/bin/python -m bench.profile ours-memory untouched
    .venv/bin/python -m bench.profile ours-memory read --requests 20000 --html out.html

Runs the requests the benchmark times (same app, same driver) under a fine-grained
sampling profiler and prints the call tree; ``bare`` gives the baseline to subtract.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from contextlib import nullcontext

from pyinstrument import Profiler

from .harness import CONFIGS, SWEEP, Env, build, timed
from .services import redis_server


async def profile(name: str, endpoint: str, requests: int, env: Env, html: str | None) -> None:
    config = next(c for c in [*CONFIGS, *SWEEP] if c.name == name)
    built = await build(config, env)
    try:
        await timed(built.app, f"/{endpoint}", built.cookie, 500)  # warm-up
        profiler = Profiler(interval=0.0001, async_mode="disabled")
        profiler.start()
        await timed(built.app, f"/{endpoint}", built.cookie, requests)
        profiler.stop()
    finally:
        await built.aclose()
    print(profiler.output_text(unicode=True, color=False, show_all=False))
    if html:
        with open(html, "w") as f:
            f.write(profiler.output_html())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("config")
    parser.add_argument("endpoint", choices=("untouched", "read", "write"))
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--html", help="also write pyinstrument's HTML report here")
    args = parser.parse_args()
    redis = redis_server() if "redis" in args.config else nullcontext("")
    with redis as redis_url, tempfile.TemporaryDirectory() as tmpdir:
        env = Env(redis_url=redis_url, tmpdir=tmpdir)
        asyncio.run(profile(args.config, args.endpoint, args.requests, env, args.html))


if __name__ == "__main__":
    main()

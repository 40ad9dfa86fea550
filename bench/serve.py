"""The uvicorn side of ``python -m bench --http``: one configuration per server process.

    BENCH_CONFIG=ours-redis BENCH_REDIS_URL=redis://... BENCH_TMPDIR=/tmp/x \\
    BENCH_COOKIE_FILE=/tmp/x/cookie uvicorn --factory bench.serve:app

On lifespan startup it builds the configuration (seeding its session in-process) and
writes the cookie to send to ``BENCH_COOKIE_FILE``; every request then goes straight to
the configuration's app.
"""

from __future__ import annotations

import os
from typing import Any

from .harness import CONFIGS, SWEEP, Built, Env, build


def app() -> Any:
    name = os.environ["BENCH_CONFIG"]
    config = next(c for c in [*CONFIGS, *SWEEP] if c.name == name)
    env = Env(redis_url=os.environ.get("BENCH_REDIS_URL", ""), tmpdir=os.environ["BENCH_TMPDIR"])
    cookie_file = os.environ["BENCH_COOKIE_FILE"]
    built: Built | None = None

    async def lifespan(receive: Any, send: Any) -> None:
        nonlocal built
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                built = await build(config, env)
                tmp = cookie_file + ".tmp"
                with open(tmp, "wb") as f:
                    f.write(built.cookie or b"")
                os.replace(tmp, cookie_file)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if built is not None:
                    await built.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        await built.app(scope, receive, send)  # type: ignore[union-attr]

    return asgi

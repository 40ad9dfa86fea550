"""A real server and a browser for the third-party flows.

``served(app)`` runs an ASGI app under uvicorn on a free loopback port, in the test's own
event loop: requests cross a real socket and HTTP parser, and the stores stay on the loop
that opened them.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import uvicorn
from starlette.types import ASGIApp

# Every server here is plain HTTP on loopback; sharing one TLS context among the clients
# spares each of them loading the CA bundle (about 0.1 s apiece).
TLS = ssl.create_default_context()

Browser = Callable[[str], httpx.AsyncClient]
"""``browser(base_url)``: a new client with its own cookie jar (see the fixture)."""


@asynccontextmanager
async def served(app: ASGIApp) -> AsyncIterator[str]:
    """``async with served(app) as base_url``: ``app`` under uvicorn until the block ends."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", ws="none", log_level="warning"))
    running = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if running.done():
                    running.result()  # start-up failed: raise its error here
                    raise RuntimeError("uvicorn stopped before it started")
                await asyncio.sleep(0.005)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await running
        listener.close()

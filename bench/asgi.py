"""Calling an ASGI app in-process: a hand-built scope, our own ``receive`` and ``send``.

No HTTP client, no server, no sockets except the ones the app itself opens (to a store),
so a figure is the app's own cost per request.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

ASGIApp = Callable[..., Awaitable[None]]

_ASGI = {"version": "3.0", "spec_version": "2.3"}


@dataclass
class Reply:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def set_cookie(self) -> bytes | None:
        """The first ``Set-Cookie`` header's ``name=value``, or ``None``."""
        for name, value in self.headers:
            if name.lower() == b"set-cookie":
                return value.split(b";", 1)[0]
        return None


def scope(path: str, headers: list[tuple[bytes, bytes]], **extra: Any) -> dict[str, Any]:
    return {
        "type": "http", "asgi": _ASGI, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
        "query_string": b"", "headers": list(headers), "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {}, **extra,
    }  # fmt: skip


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def headers(cookie: bytes | None) -> list[tuple[bytes, bytes]]:
    """A browser-like header list, with ``cookie`` (``name=value``) if given."""
    out = [(b"host", b"bench"), (b"user-agent", b"bench/1"), (b"accept", b"*/*")]
    if cookie:
        out.append((b"cookie", cookie))
    return out


async def call(app: ASGIApp, path: str, cookie: bytes | None = None, **extra: Any) -> Reply:
    """One request, the whole reply kept (for seeding and checks, not for timing)."""
    reply = Reply()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            reply.status = message["status"]
            reply.headers = list(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            reply.body += message.get("body", b"")

    await app(scope(path, headers(cookie), **extra), receive, send)
    return reply


class NotOK:
    """An ASGI ``send`` that counts responses other than 200 (timed runs fail on any)."""

    def __init__(self) -> None:
        self.count = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            self.count += 1

    def check(self, n: int, path: str) -> None:
        if self.count:
            raise RuntimeError(f"{self.count} of {n} requests to {path} did not answer 200")


async def timed(
    app: ASGIApp, path: str, cookie: bytes | None, n: int
) -> tuple[list[float], list[float]]:
    """``n`` sequential requests: the wall and the CPU microseconds each took. Any non-200
    fails the run.

    CPU is the process's (``process_time_ns``, every thread), not the calling thread's:
    aiosqlite runs each statement in a thread of its own, for the floor as for the store.
    The CPU clock is read outside the wall clock's window; what reading it costs
    (``cpu_clock_cost``, about a microsecond and a half: two system calls) is taken off
    each CPU figure.
    """
    request_headers = headers(cookie)
    send = NotOK()
    wall_clock, cpu_clock = time.perf_counter_ns, time.process_time_ns
    cost = cpu_clock_cost()
    wall, cpu = [], []
    for _ in range(n):
        request = scope(path, request_headers)  # built before the clocks start
        cpu_start = cpu_clock()
        start = wall_clock()
        await app(request, receive, send)
        end = wall_clock()
        cpu_end = cpu_clock()
        wall.append((end - start) / 1000)
        cpu.append((cpu_end - cpu_start - cost) / 1000)
    send.check(n, path)
    return wall, cpu


def median_round(app: ASGIApp, path: str, cookie: bytes | None, n: int) -> Any:
    """A round for :func:`bench.stats.interleave`: the median wall µs of ``n`` requests."""

    async def one_round() -> float:
        return statistics.median((await timed(app, path, cookie, n))[0])

    return one_round


@functools.cache
def cpu_clock_cost(samples: int = 5000) -> int:
    """Nanoseconds an empty CPU window measures (the clocks' own cost): the median of
    ``samples``, once per process."""
    wall_clock, cpu_clock = time.perf_counter_ns, time.process_time_ns
    costs = []
    for _ in range(samples):
        cpu_start = cpu_clock()
        wall_clock()
        wall_clock()
        costs.append(cpu_clock() - cpu_start)
    return int(statistics.median(costs))

"""``--http``: the same apps under uvicorn, loaded by a bounded asyncio load generator.

One uvicorn process (one worker, 127.0.0.1, a free port) per configuration, all started
up front; then, round by round, each configuration and endpoint gets a fixed-length
slice of load from ``concurrency`` keep-alive connections (raw sockets, HTTP/1.1, one
request in flight per connection). Requests/s are summed over rounds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .harness import ENDPOINTS, Env, ratio_rows, ratio_table, spread
from .services import free_port, stop_process

HTTP_CONFIGS = [
    "bare",
    "starlette",
    "starsessions-redis",
    "raw-redis",
    "raw-sqlite",
    "ours-memory",
    "ours-redis",
    "ours-sqlite",
]
# (endpoint, config, floor, goal: at least this fraction of the floor's requests/s)
HTTP_RATIOS: list[tuple[str, str, str, float | None]] = [
    ("read", "ours-redis", "raw-redis", 0.95),
    ("write", "ours-redis", "raw-redis", None),
    ("read", "starsessions-redis", "raw-redis", None),
    ("untouched", "ours-redis", "bare", None),
    ("untouched", "starlette", "bare", None),
    ("read", "ours-memory", "bare", None),
    ("read", "starlette", "bare", None),
    ("read", "ours-sqlite", "raw-sqlite", None),
    ("write", "ours-sqlite", "raw-sqlite", None),
]


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


class Server:
    def __init__(self, name: str, env: Env) -> None:
        self.name = name
        self.port = free_port()
        self.cookie_file = Path(env.tmpdir) / f"cookie-{name}"
        environ = dict(
            os.environ,
            BENCH_CONFIG=name,
            BENCH_REDIS_URL=env.redis_url,
            BENCH_TMPDIR=env.tmpdir,
            BENCH_COOKIE_FILE=str(self.cookie_file),
        )
        root = Path(__file__).resolve().parent.parent
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "bench.serve:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=root,
            env=environ,
        )
        self.cookie = b""

    def wait_ready(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.cookie_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn for {self.name} did not start")
            time.sleep(0.05)
        self.cookie = self.cookie_file.read_bytes()
        # The lifespan finished; wait until the socket accepts.
        while time.monotonic() < deadline:
            try:
                import socket

                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"uvicorn for {self.name} does not accept connections")

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)


async def load(port: int, path: str, cookie: bytes, concurrency: int, seconds: float) -> float:
    """Requests/s from ``concurrency`` keep-alive connections for ``seconds``."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench/1\r\nAccept: */*\r\n".encode()
        + (b"Cookie: " + cookie + b"\r\n" if cookie else b"")
        + b"\r\n"
    )
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(concurrency)]
    loop = asyncio.get_running_loop()
    counts = [0] * concurrency
    bad = 0

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        start = head.lower().find(b"content-length:")
        length = int(head[start + 15 : head.index(b"\r\n", start)]) if start >= 0 else 0
        if length:
            await reader.readexactly(length)
        if head[9:12] != b"200":
            nonlocal bad
            bad += 1

    async def worker(i: int, stop_at: float) -> None:
        reader, writer = conns[i]
        n = 0
        while loop.time() < stop_at:
            await one(reader, writer)
            n += 1
        counts[i] = n

    for reader, writer in conns:  # warm each connection once
        await one(reader, writer)
    started = loop.time()
    await asyncio.gather(*(worker(i, started + seconds) for i in range(concurrency)))
    elapsed = loop.time() - started
    for _, writer in conns:
        writer.close()
    if bad:
        raise RuntimeError(f"{bad} requests to {path} on port {port} did not answer 200")
    return sum(counts) / elapsed


def run(
    env: Env, *, seconds: float, rounds: int, concurrency: int, only: set[str] | None
) -> dict[str, Any]:
    names = [n for n in HTTP_CONFIGS if only is None or n in only]
    if not env.redis_url:
        names = [n for n in names if "redis" not in n]
    try:
        import httptools  # noqa: F401

        parser = "httptools"
    except ImportError:
        parser = "h11"
    log(f"HTTP: uvicorn ({parser}), {len(names)} configurations, {rounds} rounds x {seconds} s")
    servers: dict[str, Server] = {}
    skipped: dict[str, str] = {}
    try:
        for name in names:
            servers[name] = Server(name, env)
        for name, server in list(servers.items()):
            try:
                server.wait_ready()
            except RuntimeError as exc:
                skipped[name] = str(exc)
                server.stop()
                del servers[name]
        rps: dict[str, dict[str, list[float]]] = {n: {e: [] for e in ENDPOINTS} for n in servers}

        async def drive() -> None:
            for server in servers.values():  # warm-up: first requests, pools, caches
                for endpoint in ENDPOINTS:
                    await load(server.port, f"/{endpoint}", server.cookie, concurrency, 0.3)
            for _ in range(rounds):
                for name, server in servers.items():
                    for endpoint in ENDPOINTS:
                        value = await load(
                            server.port, f"/{endpoint}", server.cookie, concurrency, seconds
                        )
                        rps[name][endpoint].append(value)

        asyncio.run(drive())
    finally:
        for server in servers.values():
            server.stop()

    ratios = ratio_rows(rps, HTTP_RATIOS, higher_is_better=True)
    return {
        "parser": parser,
        "concurrency": concurrency,
        "seconds": seconds,
        "rounds": rounds,
        "rps": rps,
        "ratios": ratios,
        "skipped": skipped,
    }


def markdown(result: dict[str, Any]) -> list[str]:
    lines = [
        f"## Under uvicorn ({result['parser']}, 1 worker), {result['concurrency']} keep-alive "
        f"connections, {result['rounds']} rounds x {result['seconds']} s per cell: "
        "requests/s [p10-p90 of rounds]",
        "",
        "| configuration | untouched req/s | read req/s | write req/s |",
        "|---|---:|---:|---:|",
    ]
    for name, by_endpoint in result["rps"].items():
        cells = []
        for endpoint in ENDPOINTS:
            med, p10, p90 = spread(by_endpoint[endpoint])
            cells.append(f"{med:,.0f} [{p10:,.0f}-{p90:,.0f}]")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Throughput ratios (higher is better):",
        "",
        *ratio_table(result["ratios"], sign="≥"),
    ]
    if result["skipped"]:
        lines += ["", "Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in result["skipped"].items())]
    return lines

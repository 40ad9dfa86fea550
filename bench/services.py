"""Services the benchmark scripts run against: a throwaway ``redis-server``, free ports.

    with redis_server() as url:   # REDIS_URL if set, else a private server on a free port
        ...

No redis-py needed here: readiness is a raw ``PING`` on the socket.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager


class RedisUnavailable(SystemExit):
    """No ``redis-server`` binary and no ``REDIS_URL``.

    A ``SystemExit``: a script that cannot go on without Redis exits with the message;
    one that can (``python -m bench``) catches it and skips its Redis configurations.
    """


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[bytes], timeout: float = 5) -> None:
    """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server(*, persistent: bool = False) -> Iterator[str]:
    """Yield a Redis URL: ``REDIS_URL`` if set, else a private server's, stopped at the end.

    The private server listens on a free loopback port with its files in a temporary
    directory, removed afterwards; no RDB snapshots, and an append-only file only if
    ``persistent``. Raises ``RedisUnavailable`` if there is neither ``REDIS_URL`` nor a
    ``redis-server`` binary, and ``RuntimeError`` if the server does not answer ``PING``
    within 10 s.
    """
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(
            "redis-server not found (apt-get install -y redis-server) and REDIS_URL unset"
        )
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        command = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", workdir,
            "--save", "",
            "--appendonly", "yes" if persistent else "no",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not _answers_ping(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop_process(process)


@contextmanager
def uvicorn_server(factory: str, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """Serve ``factory`` (``module:function``) with uvicorn on a free loopback port.

    Yields ``(base_url, server_pid)`` once the port accepts connections; stops the server
    (SIGTERM, so lifespan shutdown runs) at the end.
    """
    import sys

    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", factory,
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
        # uvicorn closes a keep-alive connection idle for 5 s by default; a client that
        # waited longer than that (for the others to log in, on a busy machine) then gets
        # "Server disconnected without sending a response" on its next request.
        "--timeout-keep-alive", "120",
    ]  # fmt: skip
    server = subprocess.Popen(command, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not start serving {factory}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        stop_process(server, timeout=20)

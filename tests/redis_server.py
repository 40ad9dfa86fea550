"""A real ``redis-server`` for the tests, on a free loopback port (a pytest plugin).

``redis_url`` gives each test an empty database on a server shared by the session (or
the one ``REDIS_URL`` names). ``redis_process`` gives a test a private server it may stop
and restart, for outage tests. Without the ``redis-server`` binary the tests that need it
are skipped, except in CI (``CI=true``) where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unavailable import unavailable


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _require_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed (apt-get install redis-server), or set REDIS_URL"
        unavailable(reason)
    return binary


def ping(url: str, *, timeout: float = 0.5) -> bool:
    """Whether a Redis server answers PING at ``url``."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout) as r:
            return bool(r.ping())
    except (redis.exceptions.RedisError, OSError):
        return False


class RedisProcess:
    """A ``redis-server`` child process that can be stopped and started again on one port."""

    def __init__(self, binary: str, workdir: Path, *, persistent: bool = False) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.persistent = persistent
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, wait: float = 10.0) -> None:
        """Start the server and return once it answers PING."""
        command = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            # Persistence only where a test restarts the server and expects its data back.
            "--appendonly", "yes" if self.persistent else "no",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + wait
        while not ping(self.url, timeout=0.2):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (SIGTERM: it flushes its append-only file) and wait for it."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of the Redis server shared by the whole test session."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = RedisProcess(_require_binary(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The shared server's URL, with its data flushed before the test."""
    import redis

    with redis.Redis.from_url(redis_server) as client:
        client.flushall()
    return redis_server


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    """A private, persistent server this test may stop and restart."""
    server = RedisProcess(_require_binary(), tmp_path, persistent=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()

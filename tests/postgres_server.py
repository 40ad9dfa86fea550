"""A real PostgreSQL server for the tests, on a free loopback port (a pytest plugin).

Debian's ``postgresql`` package puts ``initdb`` and ``pg_ctl`` in
``/usr/lib/postgresql/<version>/bin``; the newest version found there is used. PostgreSQL
refuses to run as root, so when the tests run as root (as CI does) both run as the
``postgres`` user, in a temporary directory owned by it.

- ``postgres_server``: the DSN of a cluster shared by the whole test session (or the one
  ``POSTGRES_URL`` names);
- ``postgres_url``: the DSN of a new, empty database for one test, dropped after it;
- ``postgres_process``: a private cluster a test may stop and restart (outage tests).

The server listens on 127.0.0.1 only (its Unix socket sits in the temporary directory),
with ``fsync`` off: a test cluster never has to survive a power cut. Without the binaries
the tests that need them are skipped, except in CI (``CI=true``) where that is a failure.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.redis_server import IN_CI, free_port

PG_ROOT = Path("/usr/lib/postgresql")
SERVICE_USER = "postgres"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in path.name.split(".") if part.isdigit())


def find_bindir() -> Path | None:
    """The ``bin`` directory of the newest PostgreSQL installed the Debian way, if any."""
    candidates = [p for p in PG_ROOT.glob("*") if (p / "bin" / "pg_ctl").exists()]
    if candidates:
        return max(candidates, key=_version_key) / "bin"
    found = shutil.which("pg_ctl")  # other layouts (Homebrew, a source build) put it on PATH
    return Path(found).parent if found else None


def _require_bindir() -> Path:
    bindir = find_bindir()
    if bindir is None:
        reason = "PostgreSQL is not installed (apt-get install postgresql), or set POSTGRES_URL"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return bindir


def _as_service_user() -> list[str]:
    """The command prefix that runs a program as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", SERVICE_USER, "--"]


def with_database(dsn: str, database: str) -> str:
    """``dsn`` naming another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


class PostgresProcess:
    """A PostgreSQL cluster in a temporary directory that can be stopped and started again."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        # durable=True: fsync and synchronous commits on, as in production (benchmarks).
        self.durable = durable
        # Not under pytest's tmp_path: its parents are private to root, and the server
        # runs as another user.
        self.workdir = Path(tempfile.mkdtemp(prefix="asgi-sessions-pg-"))
        self.datadir = self.workdir / "data"
        self.logfile = self.workdir / "server.log"
        self.port = free_port()
        self.dsn = f"postgresql://{SERVICE_USER}@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVICE_USER)
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
        self._initdb()

    def _run(self, program: str, *args: str, timeout: float = 60) -> None:
        command = [*_as_service_user(), str(self.bindir / program), *args]
        result = subprocess.run(
            command, cwd=self.workdir, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{self._log()}"
            )

    def _log(self) -> str:
        try:
            return self.logfile.read_text()[-2000:]
        except OSError:
            return ""

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "--pgdata", str(self.datadir),
            "--username", SERVICE_USER,
            "--auth", "trust",  # loopback only, and the directory is private to postgres
            "--encoding", "UTF8",
            "--locale", "C",
            "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        speed = [] if self.durable else [
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
        ]  # fmt: skip
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.workdir}",
                *speed,
                "-c max_connections=200",
                # Expired-session purges and outage tests want a report of slow locks.
                "-c log_lock_waits=on",
            ]
        )
        self._run(
            "pg_ctl", "start", "--pgdata", str(self.datadir), "--log", str(self.logfile),
            "--options", options, "--wait", "--timeout", "60",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients, then shut down cleanly)."""
        if (self.datadir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "--pgdata", str(self.datadir), "--mode", mode, "--wait")

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        """Stop the server if it runs, and delete its directory."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _wait_for(dsn: str, timeout: float = 10.0) -> None:
    import asyncio

    import asyncpg

    async def probe() -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = await asyncpg.connect(dsn, timeout=1)
            except (OSError, asyncpg.PostgresError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)
            else:
                await connection.close()
                return

    asyncio.run(probe())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The DSN of the PostgreSQL server shared by the whole test session."""
    url = os.environ.get("POSTGRES_URL")
    if url:
        yield url
        return
    server = PostgresProcess(_require_bindir())
    try:
        server.start()
        _wait_for(server.dsn)
        yield server.dsn
    finally:
        server.remove()


_databases = itertools.count(1)


@pytest.fixture
async def postgres_url(postgres_server: str) -> AsyncIterator[str]:
    """A new, empty database on the shared server for this test; dropped afterwards."""
    import asyncpg

    name = f"test_{os.getpid()}_{next(_databases)}"
    admin = await asyncpg.connect(postgres_server)
    try:
        # template0 + FILE_COPY: a few milliseconds with fsync off, and nothing a
        # previous test left in template1 can leak in.
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        yield with_database(postgres_server, name)
    finally:
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
def postgres_process() -> Iterator[PostgresProcess]:
    """A private cluster this test may stop and restart."""
    server = PostgresProcess(_require_bindir())
    try:
        server.start()
        _wait_for(server.dsn)
        yield server
    finally:
        server.remove()

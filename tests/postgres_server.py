"""A real PostgreSQL server for the tests, on a free loopback port (a pytest plugin).

Debian's ``postgresql`` package puts ``initdb`` and ``pg_ctl`` in
``/usr/lib/postgresql/<version>/bin``; the newest version found there is used. PostgreSQL
refuses to run as root, so when the tests run as root (as CI does) both run as the
``postgres`` user, in a temporary directory owned by it.

- ``postgres_server``: the DSN of a cluster shared by the whole test session (or the one
  ``POSTGRES_URL`` names);
- ``postgres_url``: a DSN whose search path starts with a new, empty schema for one test;
- ``postgres_process``: a private cluster a test may stop and restart (outage tests).

The server listens on 127.0.0.1 only (its Unix socket sits in the temporary directory),
with ``fsync`` off: a test cluster never has to survive a power cut. Without the binaries
the tests that need them are skipped, except in CI (``CI=true``) where that is a failure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.redis_server import free_port
from tests.unavailable import unavailable

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
        unavailable(reason)
    return bindir


def _as_service_user() -> list[str]:
    """The command prefix that runs a program as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", SERVICE_USER, "--"]


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` whose connections put ``schema`` first on their search path."""
    parts = urlsplit(dsn)
    query = "&".join(filter(None, [parts.query, f"search_path={schema}"]))
    return urlunsplit(parts._replace(query=query))


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The DSN of the PostgreSQL server shared by the whole test session."""
    url = os.environ.get("POSTGRES_URL")
    if url:
        yield url
        return
    server = PostgresProcess(_require_bindir())
    try:
        server.start()  # pg_ctl --wait returns once the server accepts connections
        yield server.dsn
    finally:
        server.remove()


_schemas = itertools.count(1)


def run_sql(dsn: str, *statements: str) -> None:
    """Run ``statements`` on ``dsn`` from synchronous code, even inside a running loop.

    A fixture that an async fixture requests (``request.getfixturevalue``) cannot use the
    test's event loop, so asyncpg runs on a loop of its own in a worker thread.
    """
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    with concurrent.futures.ThreadPoolExecutor(1) as worker:
        worker.submit(asyncio.run, run()).result()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """The shared server's DSN, with a new, empty schema first on its search path.

    A schema per test rather than a database per test: CREATE DATABASE checkpoints, and
    costs ~0.4 s a test; a schema costs a few milliseconds. asyncpg passes the DSN's
    ``search_path`` parameter to the server, so a store built from the DSN puts its
    tables there; the schema and all in it are dropped after the test.
    """
    name = f"test_{os.getpid()}_{next(_schemas)}"
    run_sql(postgres_server, f'CREATE SCHEMA "{name}"')
    try:
        yield with_search_path(postgres_server, name)
    finally:
        run_sql(postgres_server, f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def postgres_process() -> Iterator[PostgresProcess]:
    """A private cluster this test may stop and restart."""
    server = PostgresProcess(_require_bindir())
    try:
        server.start()
        yield server
    finally:
        server.remove()

"""PostgreSQL for the bench: the server as a service, a scratch schema per suite, and an
asyncpg pool set up as ``PostgresStore`` sets up its own (so a raw floor pays what the
store pays for the driver, and nothing else).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .services import Run, ServiceSpec, probe


def _binary(name: str) -> str | None:
    """Debian keeps PostgreSQL's programs in ``/usr/lib/postgresql/VERSION/bin``: the newest
    version's, else the one on ``PATH`` (Homebrew, a source build)."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parts[-3].split(".") if part.isdigit())

    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=version)
    return str(found[-1]) if found else shutil.which(name)


def _initdb(run: Run, workdir: Path) -> None:
    run(
        "initdb", "--pgdata", str(workdir / "data"), "--username", "postgres",
        "--auth", "trust",  # loopback (or a bench namespace) only, and a private directory
        "--encoding", "UTF8", "--locale", "C", "--no-sync",
    )  # fmt: skip


def _argv(durable: bool) -> Callable[[str, int, Path], list[str]]:
    # Not durable: a bench cluster never has to survive a power cut (the tests' settings).
    speed = [] if durable else ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]

    def argv(host: str, port: int, workdir: Path) -> list[str]:
        settings = [
            f"listen_addresses={host}",
            f"port={port}",
            f"unix_socket_directories={workdir}",
            "max_connections=200",
            *speed,
        ]
        return ["-D", str(workdir / "data"), *(a for s in settings for a in ("-c", s))]

    return argv


def _answers(host: str, port: int) -> bool:
    """A startup message as user postgres: ``R`` (authentication) once the server accepts
    connections, ``E`` while it is still starting."""
    params = b"user\0postgres\0database\0postgres\0\0"
    return probe(host, port, struct.pack("!ii", 8 + len(params), 196608) + params, b"R")


def _spec(durable: bool) -> ServiceSpec:
    return ServiceSpec(
        name="postgres-durable" if durable else "postgres",
        binary="postgres",
        env_var="POSTGRES_URL",
        install="apt-get install -y postgresql",
        argv=_argv(durable),
        url=lambda host, port: f"postgresql://postgres@{host}:{port}/postgres",
        answers=_answers,
        prepare=_initdb,
        locate=_binary,
        user="postgres",  # it refuses to run as root
        stop_signal=signal.SIGINT,  # fast shutdown: disconnect clients, then stop
    )


POSTGRES = _spec(durable=False)
POSTGRES_DURABLE = _spec(durable=True)  # fsync and synchronous_commit on, as in production

_schemas = itertools.count(1)


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` whose connections put ``schema`` first on their search path (asyncpg sends
    the DSN's unknown query parameters to the server as settings)."""
    parts = urlsplit(dsn)
    query = "&".join(filter(None, [parts.query, f"search_path={schema}"]))
    return urlunsplit(parts._replace(query=query))


@asynccontextmanager
async def scratch_schema(dsn: str, name: str) -> AsyncIterator[str]:
    """A DSN whose tables land in a new schema, dropped (with all in it) at the end: runs
    share a server (``POSTGRES_URL``, or the harness's) without meeting each other's tables."""
    import asyncpg

    schema = f"bench_{name}_{os.getpid()}_{next(_schemas)}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield with_search_path(dsn, schema)
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def _keep_session_state(connection: object) -> None:
    """PostgresStore's pool reset: nothing (asyncpg's default is one more round trip)."""


async def store_like_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, **options: Any
) -> Any:
    """An asyncpg pool configured as ``PostgresStore``'s: statement cache on, no reset
    query on release."""
    import asyncpg

    return await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, reset=_keep_session_state, **options
    )


def server_setting(dsn: str, name: str) -> str:
    """One setting of the server (``SHOW name``), from synchronous code."""
    import asyncpg

    async def show() -> str:
        conn = await asyncpg.connect(dsn)
        try:
            return str(await conn.fetchval(f"SHOW {name}"))
        finally:
            await conn.close()

    return asyncio.run(show())

"""What a cell costs besides its wall time: this process's CPU per request, measured
around the same calls as the wall time, and the store server's own time over the cell
(Redis ``INFO cpu`` and ``INFO commandstats``, PostgreSQL ``pg_stat_statements``).
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import time
from typing import Any

from .asgi import ASGIApp, NotOK, headers, receive, scope
from .pg import POSTGRES
from .services import Unavailable


async def timed_both(
    app: ASGIApp, path: str, cookie: bytes | None, n: int
) -> tuple[list[float], list[float]]:
    """``n`` sequential requests: the wall and the CPU microseconds each took.

    CPU is the process's (``process_time_ns``, every thread), not the calling thread's:
    aiosqlite runs each statement in a thread of its own, for the floor as for the store.
    The CPU clock is read outside the wall clock's window, so the wall figure is
    ``asgi.timed``'s; what reading the CPU clock itself costs (``cpu_clock_cost``, about
    a microsecond and a half: two system calls) is taken off each CPU figure.
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


class RedisMeter:
    """The Redis server's own work over one cell: ``CONFIG RESETSTAT`` before it, then the
    server process's CPU (``INFO cpu``, user + system) and ``INFO commandstats`` after.

    The CPU figure is everything the server did for the cell (reading the socket, parsing,
    running, replying); ``usec`` in commandstats is the commands' execution alone, and a
    script's includes the commands it calls, which are listed as well.
    """

    def __init__(self, url: str) -> None:
        from redis.asyncio import Redis

        self.client = Redis.from_url(url)
        self.cost = 0.0  # server CPU microseconds of an empty cell: the meter's own

    async def calibrate(self, cells: int = 15) -> float:
        """Measure, and from then on take off each cell, the server CPU an empty cell
        shows: the statistics commands' own, and the server's timer events."""
        self.cost = 0.0
        empty = [(await self.stop(await self.start()))[0] for _ in range(cells)]
        self.cost = statistics.median(empty)
        return self.cost

    async def _cpu(self) -> float:
        info = await self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    async def start(self) -> float:
        await self.client.config_resetstat()
        return await self._cpu()

    async def stop(self, started: float) -> tuple[float, dict[str, dict[str, int]]]:
        """(server CPU microseconds since ``started``, calls and usec per command)."""
        cpu = (await self._cpu() - started) * 1e6 - self.cost
        stats = await self.client.info("commandstats")
        commands = {
            name.removeprefix("cmdstat_"): {"calls": int(v["calls"]), "usec": int(v["usec"])}
            for name, v in stats.items()
            if name not in ("cmdstat_info", "cmdstat_config|resetstat")
        }
        return cpu, commands

    async def aclose(self) -> None:
        await self.client.aclose()


# The bench's PostgreSQL with pg_stat_statements loaded (Debian's postgresql ships it).
STATEMENTS = dataclasses.replace(
    POSTGRES,
    name="postgres-statements",
    argv=lambda host, port, workdir: [
        *POSTGRES.argv(host, port, workdir),
        *("-c", "shared_preload_libraries=pg_stat_statements"),
        *("-c", "pg_stat_statements.track_planning=on"),
    ],
)


class PostgresMeter:
    """PostgreSQL's own time over one cell: ``pg_stat_statements_reset()`` before it, the
    planning and execution time of every statement after (the backend's protocol work,
    parsing and sending, is not in it: PostgreSQL keeps no per-statement CPU figure)."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    @classmethod
    async def connect(cls, url: str) -> PostgresMeter:
        """A meter on ``url``; ``Unavailable`` with the reason where the server has no
        ``pg_stat_statements`` loaded."""
        import asyncpg

        connection = await asyncpg.connect(url)
        try:
            await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await connection.fetchval("SELECT count(*) FROM pg_stat_statements")
        except asyncpg.PostgresError as exc:
            await connection.close()
            raise Unavailable(f"pg_stat_statements is not loaded on {url} ({exc})") from exc
        return cls(connection)

    async def start(self) -> float:
        await self.connection.execute("SELECT pg_stat_statements_reset()")
        return 0.0

    async def stop(self, started: float) -> tuple[float, dict[str, dict[str, int]]]:
        rows = await self.connection.fetch(
            "SELECT query, calls, total_plan_time + total_exec_time AS ms "
            "FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'"
        )
        commands = {
            " ".join(r["query"].split())[:60]: {"calls": r["calls"], "usec": round(r["ms"] * 1000)}
            for r in rows
        }
        return sum(r["ms"] for r in rows) * 1000, commands

    async def aclose(self) -> None:
        await self.connection.close()


Meter = RedisMeter | PostgresMeter

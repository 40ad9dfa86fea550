"""What a cell costs the store server: Redis's own time over the cell (``INFO cpu`` and
``INFO commandstats``). This process's CPU per request is :func:`bench.asgi.timed`'s.
"""

from __future__ import annotations

import statistics


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

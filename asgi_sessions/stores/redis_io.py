"""How RedisStore's commands reach Redis: one place that sends them.

- Concurrency is bounded by a semaphore when the store built its own client, so a burst
  queues for a connection instead of failing.
- A failure becomes a ``SessionStoreError`` that says what failed and where, without a
  password.
- On a Redis Cluster each command goes straight to the node that serves its key.
- Writes wait for a replica when the master has one
  (:mod:`asgi_sessions.stores.redis_replicas`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependency, SessionStoreError
from ..redaction import redact_url
from .redis_replicas import NotReplicated, ReplicatedWrites

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript

    from .redis_url import RedisClients

__all__ = ["Gate", "RedisCommands", "import_redis"]


def import_redis() -> Any:
    """The redis package, or the ImportError that says how to install it."""
    try:
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.exceptions
    except ImportError as exc:
        raise MissingDependency("redis", "redis") from exc
    return redis


def describe_client(client: Any) -> str:
    """Where the client points, for error messages (never with a password)."""
    nodes = getattr(client, "startup_nodes", None)
    if nodes:
        return "Redis Cluster via " + ",".join(f"{node.host}:{node.port}" for node in nodes)
    pool = getattr(client, "connection_pool", None)
    service = getattr(pool, "service_name", None)
    if service is not None:
        return f"the master Sentinel names for {service!r}"
    kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}?db={kwargs.get('db', 0)}"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"redis://{host}:{port}/{db}"


class Gate:
    """At most ``size`` commands in flight; the others wait their turn, first come first
    served.

    ``asyncio.Semaphore`` does the same, but its ``acquire()`` is a coroutine even when a
    slot is free: measured, 9,000 instructions a command, where the whole ``_call`` around
    a command costs 3,700 without it. Here a free slot costs a decrement.
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        """Take a free slot, if there is one and nobody is waiting for it."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        """Wait for a slot (cancel it, e.g. with ``asyncio.timeout``, to give up)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.give()  # handed a slot just as we gave up: pass it on
            elif future in self._waiters:
                self._waiters.remove(future)
            raise

    def give(self) -> None:
        """Free a slot: hand it to the longest waiter still waiting."""
        waiters = self._waiters
        while waiters:
            future = waiters.popleft()
            if not future.done():
                future.set_result(None)
                return
        self.free += 1


class RedisCommands:
    """The half of RedisStore that talks to Redis (a base class of it)."""

    _closed: bool

    if TYPE_CHECKING:

        def _require_open(self) -> None: ...  # from Store

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        wait_for_replicas: bool | None,
        replica_timeout: float,
    ) -> None:
        redis = import_redis()
        self.client = client
        # Every Lua script this store runs, so that a caller can preload them (SCRIPT LOAD).
        self.scripts: list[AsyncScript] = []
        self.cluster = isinstance(client, redis.asyncio.cluster.RedisCluster)
        self._owned_clients: RedisClients | None = None
        # from_url() bounds concurrent commands to its pool's size, so a burst queues here
        # instead of failing with "Too many connections"; a client you pass in is yours.
        self._gate: Gate | None = None
        self._pool_timeout = 5.0
        self._errors: tuple[type[BaseException], ...] = (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
            NotReplicated,
        )
        self._no_script = redis.exceptions.NoScriptError
        # On one server the client's own method: no extra layer on every load.
        self._hgetall: Callable[[str], Awaitable[dict[Any, Any]]] = (
            self._routed_hgetall if self.cluster else client.hgetall
        )
        self._where = describe_client(client)
        if wait_for_replicas is None:
            # Cluster masters and Sentinel-managed masters have replicas a failover promotes.
            pool = getattr(client, "connection_pool", None)
            wait_for_replicas = self.cluster or hasattr(pool, "service_name")
        self._replicas = (
            ReplicatedWrites(client, timeout=replica_timeout) if wait_for_replicas else None
        )

    def register(self, name: str) -> AsyncScript:
        """The Lua script ``lua/<name>.lua``, ready to run."""
        text = (resources.files(__package__) / "lua" / f"{name}.lua").read_text()
        script = self.client.register_script(text)
        self.scripts.append(script)
        return script

    def _failure(self, doing: str, exc: BaseException) -> SessionStoreError:
        return SessionStoreError(
            f"Redis ({self._where}) failed while {doing} ({type(exc).__name__}: "
            f"{redact_url(str(exc))}). Check that the server is running and reachable "
            "from this process, and its timeouts and credentials."
        )

    async def _call(
        self, doing: str, command: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any
    ) -> Any:
        """Run one Redis command; a failure becomes a SessionStoreError saying what failed."""
        if self._closed:
            self._require_open()
        gate = self._gate
        if gate is not None and not gate.take_now():
            await self._wait(gate, doing)
        try:
            return await command(*args, **kwargs)
        except self._errors as exc:
            raise self._failure(doing, exc) from exc
        finally:
            if gate is not None:
                gate.give()

    async def _wait(self, gate: Gate, doing: str) -> None:
        # Every connection is busy: wait for one, but not forever.
        try:
            async with asyncio.timeout(self._pool_timeout):
                await gate.take()
        except TimeoutError as exc:
            raise self._failure(
                f"{doing} (no free connection within {self._pool_timeout} s)", exc
            ) from exc

    async def _run(self, doing: str, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a script that writes: through WAIT when the master has replicas to wait for."""
        if self._replicas is not None:
            return await self._call(doing, self._replicas.run, script, keys, args)
        return await self._call(doing, self._script, script, keys, args)

    async def _script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        if not self.cluster:
            # EVALSHA itself rather than through the script object, which pays two imports
            # and a copy of the arguments on every call.
            client: Any = self.client
            try:
                return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            except self._no_script:
                await client.script_load(script.script)  # a restarted server, a FLUSH
                return await client.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        target = await self._node_of(keys[0])
        try:
            return await self.client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args, **target
            )
        except self._no_script:
            await self.client.script_load(script.script)  # on every master
            return await self.client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args, **target
            )

    async def _routed_hgetall(self, name: str) -> dict[Any, Any]:
        client: Any = self.client
        return await client.execute_command("HGETALL", name, **await self._node_of(name))  # type: ignore[no-any-return]

    async def _node_of(self, name: str) -> dict[str, Any]:
        """Where a cluster command on ``name`` goes, decided here rather than by the client.

        redis-py picks a command's node before it makes sure it knows the slots, so the
        first commands of a fresh (or just reset) client can go to a random node; each
        MOVED answer then used to reset the client again, under every other request.
        """
        client: Any = self.client
        await client.initialize()
        return {"target_nodes": client.get_node_from_key(name)}

"""Acknowledge a write only once a replica holds it (``WAIT``).

Redis replicates asynchronously: a master answers a write before any replica has it, so
a master that dies right after answering takes the write with it, and the replica that
Cluster or Sentinel promotes never saw it. ``WAIT 1 timeout`` blocks until a replica
has acknowledged everything the connection wrote. We send it in the same pipeline as
the write (one round trip, on the same connection), so a save is answered only once a
replica holds it; otherwise the save fails (the request gets a 5xx, the cookie is
untouched) instead of being acknowledged and then lost. One replica is enough: both
Sentinel and Cluster promote the replica that is furthest along.

A master with no replica online (just after a failover, until the old master is back as
its replica) has nothing a failover could promote, so nobody is waited for: its writes
are answered at once and the pipeline asks ``INFO replication`` instead of ``WAIT``,
until a replica shows up. The first write after a replica vanished pays the timeout once.
A write made while the replica was coming back is confirmed by a second, tiny write in
the same slot and a ``WAIT`` (replication is in order: covering the later write covers
the earlier one).

What this does not promise (Redis cannot): ``WAIT`` puts a write in a replica's memory,
not on its disk; a write that failed may still have been applied, and may show up or
vanish at the next failover; a replica that is online but stalled makes writes on its
master fail after ``timeout`` until it recovers or its master drops it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.commands.core import AsyncScript

__all__ = ["NotReplicated", "ReplicatedWrites"]


class NotReplicated(Exception):
    """The master applied a write but its online replicas did not confirm it in time."""


class ReplicatedWrites:
    """Runs write scripts so that they are answered only once replicated.

    Args:
        timeout: seconds to wait for the replicas before the write counts as failed.
    """

    def __init__(self, client: Redis | RedisCluster, *, timeout: float) -> None:
        from redis.asyncio.cluster import RedisCluster
        from redis.exceptions import NoScriptError

        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        self.timeout_ms = max(1, round(timeout * 1000))
        self._no_script = NoScriptError
        # Replicas each master had online when last asked.
        self._online: dict[str, int] = {}

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` on ``keys``; return its reply once the replicas hold the write."""
        try:
            return await self._run(script, keys, args)
        except self._no_script:
            # The script cache is empty on a promoted replica or a restarted server.
            await self.client.script_load(script.script)
            return await self._run(script, keys, args)

    async def _run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        node, target = await self._node(keys[0])
        # A node not asked yet (a new master after a failover, say) is asked, not waited on.
        replicated = self._online.get(node, 0) > 0
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args, **target)
        if replicated:
            pipe.execute_command("WAIT", 1, self.timeout_ms, **target)
        else:
            pipe.execute_command("INFO", "replication", **target)
        reply, check = await pipe.execute(raise_on_error=False)
        for result in (reply, check):
            if isinstance(result, Exception):
                raise result
        if self.cluster:
            serving = (await self._node(keys[0]))[0]
            if serving != node:
                # The slot moved while we wrote (a failover, a resharding): WAIT went to
                # the wrong node, so confirm on the right one.
                node, replicated, check = serving, False, await self._info(keys[0])
        if replicated and int(check) >= 1:
            return reply
        online = _online_replicas(check if not replicated else await self._info(keys[0]))
        self._online[node] = online
        if online == 0:
            return reply  # nothing a failover could promote: nobody to wait for
        if not replicated and await self._confirm(keys[0]) >= 1:
            return reply
        raise NotReplicated(
            f"none of the master's {online} online replica(s) confirmed the write within "
            f"{self.timeout_ms} ms"
        )

    async def _info(self, key: str) -> Any:
        _, target = await self._node(key)
        return await self.client.execute_command("INFO", "replication", **target)

    async def _confirm(self, key: str) -> int:
        """A later write in the same slot, then WAIT for a replica."""
        _, target = await self._node(key)
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("SET", key + ":ack", "1", "PX", 1000, **target)
        pipe.execute_command("WAIT", 1, self.timeout_ms, **target)
        _, acknowledged = await pipe.execute()
        return int(acknowledged)

    async def _node(self, key: str) -> tuple[str, dict[str, Any]]:
        """The name of the node that serves ``key``, and how to send a command there."""
        if not self.cluster:
            return "", {}
        client: Any = self.client
        await client.initialize()
        node = client.get_node_from_key(key)
        return str(node.name), {"target_nodes": node}


def _online_replicas(info: Any) -> int:
    # redis-py parses INFO into a dict: slave0 -> {"ip": ..., "state": "online", ...}
    return sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )

"""Acknowledge a write only once the master's replicas hold it (``WAIT``).

Redis replicates asynchronously: a master answers a write before any replica has it, so
a master that dies right after answering takes the write with it, and the replica that
Cluster or Sentinel promotes never saw it. ``WAIT n timeout`` blocks until ``n``
replicas have acknowledged everything the connection wrote. We send it in the same
pipeline as the write (one round trip, on the same connection), so a save is answered
only when every replica the master had online at that moment holds it; otherwise the
save fails (the request gets a 5xx, the cookie is untouched) instead of being
acknowledged and lost.

How many replicas to wait for is learnt from the master itself: the pipeline also asks
``INFO replication``, and the count of replicas online is remembered per node for the
next write. A master with no replica online (just after a failover, before the old
master is back as a replica) is waited for by nobody: there is nothing a failover could
promote. If a replica came online since the last write, the write is confirmed by a
second, tiny write in the same slot and a ``WAIT`` for all of them (replication is in
order, so covering the later write covers the earlier one).

What this does not promise (Redis cannot): ``WAIT`` makes a write reach the replicas'
memory, not their disks; a write that failed may still have been applied, and may show
up or vanish at the next failover; a replica that is online but lagging makes writes on
its master fail after ``timeout`` until it catches up or drops out.
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
        # Replicas each master had online at its last write (unknown masters: assume one).
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
        expected = self._online.get(node, 1)
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        pipe.execute_command("INFO", "replication", **target)
        if expected:
            pipe.execute_command("WAIT", expected, self.timeout_ms, **target)
        results = await pipe.execute(raise_on_error=False)
        reply = results[0]
        if isinstance(reply, Exception):
            raise reply
        for result in results[1:]:
            if isinstance(result, Exception):
                raise result
        online = _online_replicas(results[1])
        self._online[node] = online
        acknowledged = results[2] if expected else 0
        moved = self.cluster and (await self._node(keys[0]))[0] != node
        if moved or (acknowledged < online and expected < online):
            # WAIT went to another node (the slot moved) or asked for too few replicas.
            acknowledged = await self._confirm(keys[0], online)
        if acknowledged < online:
            raise NotReplicated(
                f"{acknowledged} of the master's {online} online replica(s) confirmed the "
                f"write within {self.timeout_ms} ms"
            )
        return reply

    async def _confirm(self, key: str, online: int) -> int:
        """A later write in the same slot, then WAIT for every online replica."""
        _, target = await self._node(key)
        pipe = self.client.pipeline(transaction=False)
        pipe.execute_command("SET", key + ":ack", "1", "PX", 1000)
        pipe.execute_command("WAIT", max(online, 1), self.timeout_ms, **target)
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

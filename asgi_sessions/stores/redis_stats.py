"""``RedisStore.stats()``: count sessions, owners and bytes under the prefix, for operators.

It SCANs, a page at a time, on the server or on every master of a cluster: fine for
``asgi-sessions stats``, never used by a request.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .base import StoreStats
from .redis_layout import EXPIRES, MOVED, OWNER

if TYPE_CHECKING:
    from .redis import RedisStore

__all__ = ["measure"]


async def measure(store: RedisStore) -> StoreStats:
    """Live and expired sessions, distinct owners, and ``MEMORY USAGE`` of every key."""
    client: Any = store.client
    now = store.clock()
    live = expired = size = 0
    owners: set[str] = set()
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", store.prefix) + "*"
    if store.cluster:
        await client.initialize()
        targets = [{"target_nodes": node} for node in client.get_primaries()]
    else:
        targets = [{}]
    for target in targets:
        cursor: Any = 0
        while True:
            cursor, keys = await store._call(
                "counting sessions",
                client.execute_command,
                "SCAN", cursor, "MATCH", pattern, "COUNT", 1000,
                **target,
            )  # fmt: skip
            if isinstance(cursor, dict):  # a cluster answers {node: cursor}
                (cursor,) = cursor.values()
            keys = [key.decode() if isinstance(key, bytes) else key for key in keys]
            sessions = [key for key in keys if store.layout.kind(key) == "session"]
            pipe = client.pipeline(transaction=False)
            for key in sessions:
                pipe.hmget(key, [EXPIRES, OWNER, MOVED])
            for key in keys:
                pipe.memory_usage(key)
            replies = await store._call("counting sessions", pipe.execute)
            for expires, owner, moved in replies[: len(sessions)]:
                if expires is None or moved is not None:
                    continue  # deleted since the SCAN, or a moved session's sealed copy
                if float(expires) > now:
                    live += 1
                    if owner is not None:
                        owners.add(owner.decode() if isinstance(owner, bytes) else owner)
                else:
                    expired += 1
            size += sum(used or 0 for used in replies[len(sessions) :])
            if int(cursor) == 0:
                break
    return StoreStats(live, expired, len(owners), size, "memory")

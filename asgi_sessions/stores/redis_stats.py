"""``RedisStore.stats()``: count sessions, owners and bytes under the prefix, for operators.

It SCANs, a page at a time, on the server or on every master of a cluster: fine for
``asgi-sessions stats``, never used by a request. An import marker (a record whose only
data field is ``d:_imported``, see :func:`~asgi_sessions.stores.base.is_import_marker`)
is counted apart: the page's ``HMGET`` reads that field too, and only the few records
that have it get an ``HKEYS`` to see whether it is their only one.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from .base import IMPORT_MARKER_KEY, StoreStats
from .redis_layout import DATA, EXPIRES, MOVED, OWNER, Layout

__all__ = ["measure"]

Call = Callable[..., Awaitable[Any]]
"""Runs one command as the store does (its connection gate; a failure becomes a
``SessionStoreError`` saying what failed): ``RedisStore._call``."""


async def measure(client: Any, layout: Layout, now: float, call: Call) -> StoreStats:
    """Live and expired sessions, distinct owners, live import markers, and ``MEMORY USAGE``
    of every key under ``layout.prefix``, by the store's clock reading ``now``.

    Takes the store's parts rather than the store, so that this module needs nothing of
    :mod:`.redis` (which calls it).
    """
    live = expired = markers = size = 0
    owners: set[str] = set()
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", layout.prefix) + "*"
    if layout.cluster:
        await client.initialize()
        targets = [{"target_nodes": node} for node in client.get_primaries()]
    else:
        targets = [{}]
    for target in targets:
        cursor: Any = 0
        while True:
            cursor, keys = await call(
                "counting sessions",
                client.execute_command,
                "SCAN", cursor, "MATCH", pattern, "COUNT", 1000,
                **target,
            )  # fmt: skip
            if isinstance(cursor, dict):  # a cluster answers {node: cursor}
                (cursor,) = cursor.values()
            keys = [key.decode() if isinstance(key, bytes) else key for key in keys]
            sessions = [key for key in keys if layout.kind(key) == "session"]
            pipe = client.pipeline(transaction=False)
            for key in sessions:
                pipe.hmget(key, [EXPIRES, OWNER, MOVED, MARKER_FIELD])
            for key in keys:
                pipe.memory_usage(key)
            replies = await call("counting sessions", pipe.execute)
            candidates: list[tuple[str, Any]] = []
            for key, (expires, owner, moved, flag) in zip(
                sessions, replies[: len(sessions)], strict=True
            ):
                if expires is None or moved is not None:
                    continue  # deleted since the SCAN, or a moved session's sealed copy
                if float(expires) <= now:
                    expired += 1
                elif flag is not None:
                    candidates.append((key, owner))  # a marker, or a session that has the key
                else:
                    live += 1
                    if owner is not None:
                        owners.add(owner.decode() if isinstance(owner, bytes) else owner)
            size += sum(used or 0 for used in replies[len(sessions) :])
            if candidates:
                pipe = client.pipeline(transaction=False)
                for key, _ in candidates:
                    pipe.hkeys(key)
                fields = await call("counting sessions", pipe.execute)
                for (_, owner), names in zip(candidates, fields, strict=True):
                    if _data_fields(names) == 1:
                        markers += 1
                        continue
                    live += 1  # also a session deleted since the HMGET: counted as read
                    if owner is not None:
                        owners.add(owner.decode() if isinstance(owner, bytes) else owner)
            if int(cursor) == 0:
                break
    return StoreStats(live, expired, len(owners), size, "memory", markers)


MARKER_FIELD = DATA + IMPORT_MARKER_KEY


def _data_fields(names: list[Any]) -> int:
    """How many of a hash's field names are data fields (``d:...``), not metadata."""
    return sum((name.decode() if isinstance(name, bytes) else name)[:2] == DATA for name in names)

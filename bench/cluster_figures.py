"""RedisStore on a Redis Cluster: how sessions spread over the slots.

Run: ``.venv/bin/python -m bench.cluster_figures [--sessions 100000]``. Needs no server:
it mints keys with the store's own code and counts the slots their hashes land on.
"""

from __future__ import annotations

import argparse
import secrets
from collections import Counter

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from asgi_sessions.stores.redis_layout import ClusterLayout, mint_key, owner_tag, random_tag

PREFIX = "asgi_sessions:"
LAYOUT = ClusterLayout(PREFIX)


def name_of(prefix: str, key: str) -> str:
    return LAYOUT.name(key)


def spread(slots: Counter[int]) -> str:
    per_slot = sorted(slots.values())
    return (
        f"{len(slots):,} of {REDIS_CLUSTER_HASH_SLOTS:,} slots; sessions per used slot: "
        f"median {per_slot[len(per_slot) // 2]}, max {per_slot[-1]}"
    )


def slot_spread(count: int) -> dict[str, Counter[int]]:
    """The slots of ``count`` sessions minted as the store mints them, in three populations."""
    slot_key = secrets.token_bytes(32)
    ownerless = Counter(
        key_slot(name_of(PREFIX, mint_key(random_tag())).encode()) for _ in range(count)
    )
    distinct = Counter(
        key_slot(name_of(PREFIX, mint_key(owner_tag(slot_key, f"user-{n}"))).encode())
        for n in range(count)
    )
    # 10 sessions (devices) per user: a user's sessions and index share one slot.
    devices = Counter(
        key_slot(name_of(PREFIX, mint_key(owner_tag(slot_key, f"user-{n // 10}"))).encode())
        for n in range(count)
    )
    # Each owner's index sits in its sessions' slot.
    for n in range(100):
        tag = owner_tag(slot_key, f"user-{n}")
        index = LAYOUT.index_prefix(tag) + f"user-{n}"
        session = name_of(PREFIX, mint_key(tag))
        if key_slot(index.encode()) != key_slot(session.encode()):
            raise AssertionError("an owner's index and sessions landed in different slots")
    return {
        "ownerless sessions": ownerless,
        "sessions of distinct owners": distinct,
        "10 sessions per owner": devices,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    args = parser.parse_args()
    print(f"Slot spread of {args.sessions:,} sessions (asgi_sessions.stores.redis_layout):")
    for population, slots in slot_spread(args.sessions).items():
        print(f"  {population:28s} {spread(slots)}")


if __name__ == "__main__":
    main()

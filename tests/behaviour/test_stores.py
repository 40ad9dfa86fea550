"""What every server store does outside a request, and MemoryStore's own bounds."""

from __future__ import annotations

import asyncio
from datetime import UTC

import pytest

from asgi_sessions import JSONSerializer, MemoryStore, Store
from tests.clock import FakeClock
from tests.support import encoded, session_write


async def test_clear_expired_removes_exactly_the_expired_sessions(
    store: Store, clock: FakeClock
) -> None:
    await store.save(
        "live".ljust(43, "k"), session_write(clock(), set=encoded({"a": 1}), create=True, ttl=100)
    )
    await store.save(
        "dead".ljust(43, "k"), session_write(clock(), set=encoded({"b": 2}), create=True, ttl=10)
    )
    clock.advance(50)
    removed = await store.clear_expired()
    # Redis expires records by itself, so there is never anything left for it to remove.
    assert removed == (0 if type(store).__name__ == "RedisStore" else 1)
    assert await store.get("dead".ljust(43, "k")) is None
    assert await store.clear_expired() == 0
    record = await store.get("live".ljust(43, "k"))
    assert record is not None
    assert record.session_key == "live".ljust(43, "k")
    assert record.expire_date.tzinfo is UTC
    assert record.expire_date.timestamp() == pytest.approx(clock() + 50, abs=1)
    assert record.get_decoded() == {"a": 1}


async def test_a_memory_store_evicts_the_least_recently_written_session(
    clock: FakeClock,
) -> None:
    store = MemoryStore(max_entries=2, clock=clock)
    keys = [name.ljust(43, "k") for name in ("first", "second", "third")]
    for key in keys[:2]:
        await store.save(key, session_write(clock(), set=encoded({"k": key}), create=True))
    await store.save(keys[0], session_write(clock(), set=encoded({"again": 1})))  # now newest
    await store.save(keys[2], session_write(clock(), set=encoded({"k": 3}), create=True))
    assert len(store) == 2
    assert await store.load(keys[1]) is None
    assert await store.load(keys[0]) is not None
    assert await store.load(keys[2]) is not None


async def test_a_memory_store_is_safe_under_concurrent_tasks(clock: FakeClock) -> None:
    store = MemoryStore(clock=clock)
    key = "shared".ljust(43, "k")
    await store.save(key, session_write(clock(), set=encoded({"seed": 0}), create=True))
    await asyncio.gather(
        *(store.save(key, session_write(clock(), set=encoded({f"k{i}": i}))) for i in range(100))
    )
    stored = await store.load(key)
    assert stored is not None and len(stored.data) == 101


@pytest.mark.parametrize(
    ("text", "message"), [("nope", "not JSON"), ('"a" "b"', "extra data"), ("", "not JSON")]
)
def test_the_json_serializer_refuses_anything_but_exactly_one_value(
    text: str, message: str
) -> None:
    serializer = JSONSerializer()
    with pytest.raises(ValueError, match=message):
        serializer.loads(text)
    assert serializer.loads(serializer.dumps({"a": [1, None]})) == {"a": [1, None]}
    assert repr(serializer) == "JSONSerializer()"
    with pytest.raises(ValueError):
        serializer.dumps(float("nan"))

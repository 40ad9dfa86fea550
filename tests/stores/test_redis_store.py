"""What only RedisStore does: its key layout, native expiry, round trips, owner index, outages.

The behaviour every store shares runs on Redis through the ``store`` fixture; these tests
look inside the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_sessions import MissingDependency, SessionMiddleware, SessionStoreError
from asgi_sessions.devices import decode_device, encode_device
from asgi_sessions.errors import ImproperlyConfigured, KeyCollision, SessionInterrupted
from asgi_sessions.stores.base import SessionWrite, hash_key, public_id_for
from asgi_sessions.stores.redis import RedisStore
from asgi_sessions.stores.redis_io import Gate
from tests.clock import FakeClock
from tests.redis_server import RedisProcess, free_port
from tests.support import session_write

KEY = "k" * 43
SECRET = "redis-store-test-secret-that-is-long-enough"


@pytest.fixture
def sync_redis(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture
async def rstore(redis_url: str, clock: FakeClock) -> AsyncIterator[RedisStore]:
    async with RedisStore.from_url(redis_url, clock=clock) as store:
        yield store


class CommandCounter:
    """Counts the commands a client sends, by wrapping its execute_command."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.commands: Counter[str] = Counter()
        original = client.execute_command

        async def counted(*args: Any, **options: Any) -> Any:
            self.commands[str(args[0]).upper()] += 1
            return await original(*args, **options)

        client.execute_command = counted  # type: ignore[method-assign]

    @property
    def total(self) -> int:
        return sum(self.commands.values())

    def reset(self) -> None:
        self.commands.clear()


# -- layout -----------------------------------------------------------------------------


async def test_a_session_is_one_hash_named_by_the_hash_of_its_key(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"user": '"ada"', "m:e": "1"}, create=True))

    stored = sync_redis.hgetall(f"asgi_sessions:{hash_key(KEY)}")

    assert stored[b"d:user"] == b'"ada"'
    # A user key that looks like metadata cannot shadow it.
    assert stored[b"d:m:e"] == b"1"
    assert float(stored[b"m:e"]) == pytest.approx(clock() + 3600)


async def test_the_raw_session_key_appears_nowhere_in_the_database(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": '"1"'}, create=True, owner="u1"))

    dump = []
    for name in sync_redis.scan_iter():
        dump.append(name)
        kind = sync_redis.type(name)
        if kind == b"hash":
            dump += [item for pair in sync_redis.hgetall(name).items() for item in pair]
        elif kind == b"zset":
            dump += sync_redis.zrange(name, 0, -1)
    assert dump
    assert not [item for item in dump if KEY.encode() in item]


async def test_the_hash_expires_natively_when_the_session_does(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True, ttl=600))

    pttl = sync_redis.pttl(f"asgi_sessions:{hash_key(KEY)}")

    assert 595_000 < pttl <= 600_000
    assert await rstore.clear_expired() == 0


async def test_a_record_our_clock_calls_expired_reads_as_missing(
    rstore: RedisStore, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True, ttl=60))

    clock.advance(61)

    assert await rstore.load(KEY) is None
    with pytest.raises(SessionInterrupted):
        await rstore.save(KEY, session_write(clock(), set={"a": "2"}))
    # ...and a new session may take its place.
    await rstore.save(KEY, session_write(clock(), set={"b": "3"}, create=True))
    loaded = await rstore.load(KEY)
    assert loaded is not None
    assert loaded.data == {"b": "3"}


async def test_a_custom_prefix_names_every_key(
    redis_url: str, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    async with RedisStore.from_url(redis_url, prefix="app1:", clock=clock) as store:
        await store.save(KEY, session_write(clock(), set={"a": "1"}, create=True, owner="u1"))

    assert sorted(sync_redis.keys()) == [f"app1:{hash_key(KEY)}".encode(), b"app1:owner:u1"]


@pytest.mark.parametrize("decode_responses", [True, False])
async def test_a_client_given_by_the_app_may_decode_responses_or_not(
    redis_url: str, clock: FakeClock, decode_responses: bool
) -> None:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=decode_responses)
    try:
        store = RedisStore(client, clock=clock)
        await store.save(KEY, session_write(clock(), set={"a": '"é"'}, create=True, owner="u1"))
        loaded = await store.load(KEY)
        assert loaded is not None
        assert loaded.data == {"a": '"é"'}
        assert [s.public_id for s in await store.list_sessions("u1")] == [
            public_id_for(hash_key(KEY))
        ]
    finally:
        await client.aclose()


async def test_thousands_of_keys_are_written_and_deleted_in_one_save(
    rstore: RedisStore, clock: FakeClock
) -> None:
    many = {f"k{i}": str(i) for i in range(2500)}
    await rstore.save(KEY, session_write(clock(), set=many, create=True))
    await rstore.save(KEY, session_write(clock(), deleted=frozenset(f"k{i}" for i in range(1200))))

    loaded = await rstore.load(KEY)

    assert loaded is not None
    assert loaded.data == {f"k{i}": str(i) for i in range(1200, 2500)}


# -- round trips and atomicity ----------------------------------------------------------


async def test_a_load_and_a_save_are_one_round_trip_each(
    rstore: RedisStore, clock: FakeClock
) -> None:
    # The first use of each script loads it (EVALSHA, NOSCRIPT, SCRIPT LOAD, EVALSHA).
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True))
    await rstore.delete("other" * 9)
    counter = CommandCounter(rstore.client)

    await rstore.load(KEY)
    assert counter.commands == {"HGETALL": 1}

    counter.reset()
    await rstore.save(KEY, session_write(clock(), set={"b": "2"}))
    assert counter.commands == {"EVALSHA": 1}

    counter.reset()
    await rstore.delete(KEY)
    assert counter.commands == {"EVALSHA": 1}


async def test_a_save_reloads_its_script_after_the_server_forgot_it(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True))
    sync_redis.script_flush()

    await rstore.save(KEY, session_write(clock(), set={"a": "2"}))

    loaded = await rstore.load(KEY)
    assert loaded is not None
    assert loaded.data == {"a": "2"}


async def test_concurrent_saves_of_different_keys_both_survive(
    redis_url: str, clock: FakeClock
) -> None:
    async with (
        RedisStore.from_url(redis_url, clock=clock) as one,
        RedisStore.from_url(redis_url, clock=clock) as two,
    ):
        await one.save(KEY, session_write(clock(), set={"base": "0"}, create=True))
        for round_ in range(20):
            await asyncio.gather(
                one.save(KEY, session_write(clock(), set={f"a{round_}": "1"})),
                two.save(KEY, session_write(clock(), set={f"b{round_}": "2"})),
            )
        loaded = await one.load(KEY)

    assert loaded is not None
    assert len(loaded.data) == 41


async def test_an_update_of_a_deleted_session_raises_and_does_not_resurrect_it(
    rstore: RedisStore, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True, owner="u1"))
    await rstore.delete(KEY)

    with pytest.raises(SessionInterrupted):
        await rstore.save(KEY, session_write(clock(), set={"a": "2"}, owner="u1"))

    assert await rstore.load(KEY) is None
    assert await rstore.list_sessions("u1") == []


async def test_the_usual_save_reports_the_end_and_setting_in_force_after_it(
    rstore: RedisStore, clock: FakeClock
) -> None:
    # update.lua answers the usual save with a number (gone, or the default end) and only
    # a record with an expiry setting of its own with its end and setting.
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True))
    plain = await rstore.save(KEY, session_write(clock() + 5, set={"a": "2"}, ttl=100))
    assert (plain.alive, plain.expires_at, plain.expiry) == (True, clock() + 105, None)

    await rstore.save(KEY, session_write(clock(), set={"a": "3"}, expiry="s:600"))
    idle = await rstore.save(KEY, session_write(clock() + 7, set={"a": "4"}, ttl=100))
    assert (idle.alive, idle.expires_at, idle.expiry) == (True, clock() + 607, "s:600")

    capped = await rstore.save(
        KEY, session_write(clock() + 8, set={"a": "5"}, ttl=100, cap=clock() + 50)
    )
    assert (capped.expires_at, capped.expiry) == (clock() + 50, "s:600")
    loaded = await rstore.load(KEY)
    assert loaded is not None
    assert (loaded.data, loaded.expires_at, loaded.updated_at) == (
        {"a": "5"},
        clock() + 50,
        clock() + 8,
    )

    await rstore.delete(KEY)
    with pytest.raises(SessionInterrupted):
        await rstore.save(KEY, session_write(clock(), set={"a": "6"}))
    assert await rstore.load(KEY) is None


async def test_creating_over_a_live_session_raises_key_collision(
    rstore: RedisStore, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True))

    with pytest.raises(KeyCollision):
        await rstore.save(KEY, session_write(clock(), set={"b": "2"}, create=True))

    loaded = await rstore.load(KEY)
    assert loaded is not None
    assert loaded.data == {"a": "1"}


async def test_replace_drops_every_old_key_but_keeps_the_creation_time(
    rstore: RedisStore, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": "1", "b": "2"}, create=True))
    created = clock()
    clock.advance(10)

    await rstore.save(KEY, session_write(clock(), set={"c": "3"}, replace=True))

    loaded = await rstore.load(KEY)
    assert loaded is not None
    assert loaded.data == {"c": "3"}
    assert loaded.created_at == created
    assert loaded.updated_at == clock()


# -- owner index ------------------------------------------------------------------------


async def test_the_owner_index_is_a_sorted_set_of_store_ids_scored_by_expiry(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True, owner="u1", ttl=100))

    members = sync_redis.zrange("asgi_sessions:owner:u1", 0, -1, withscores=True)

    assert members == [(hash_key(KEY).encode(), pytest.approx(clock() + 100))]
    assert sync_redis.pttl("asgi_sessions:owner:u1") > 0


async def test_changing_the_owner_moves_the_session_between_indexes(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True, owner="u1"))
    await rstore.save(KEY, session_write(clock(), owner="u2"))

    assert await rstore.list_sessions("u1") == []
    assert len(await rstore.list_sessions("u2")) == 1
    assert not sync_redis.exists("asgi_sessions:owner:u1")

    await rstore.save(KEY, session_write(clock(), owner=None))
    assert await rstore.list_sessions("u2") == []


async def test_deleting_a_session_removes_it_from_its_owners_index(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    await rstore.save(KEY, session_write(clock(), set={"a": "1"}, create=True, owner="u1"))

    await rstore.delete(KEY)

    assert sync_redis.keys() == []


async def test_listing_cleans_members_whose_session_vanished(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    keys = [f"{i}" * 43 for i in range(3)]
    for key in keys:
        await rstore.save(key, session_write(clock(), set={"a": "1"}, create=True, owner="u1"))
        clock.advance(1)
    # As if Redis had expired it natively.
    sync_redis.delete(f"asgi_sessions:{hash_key(keys[1])}")

    listed = await rstore.list_sessions("u1")

    assert [s.public_id for s in listed] == [public_id_for(hash_key(keys[i])) for i in (0, 2)]
    assert sync_redis.zcard("asgi_sessions:owner:u1") == 2


async def test_listing_drops_sessions_expired_by_the_clock(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    await rstore.save(
        "a" * 43, session_write(clock(), set={"a": "1"}, create=True, owner="u1", ttl=10)
    )
    await rstore.save(
        "b" * 43, session_write(clock(), set={"a": "1"}, create=True, owner="u1", ttl=100)
    )
    clock.advance(50)

    listed = await rstore.list_sessions("u1")

    assert [s.public_id for s in listed] == [public_id_for(hash_key("b" * 43))]
    assert sync_redis.zcard("asgi_sessions:owner:u1") == 1


async def test_revoke_and_revoke_all_delete_sessions_and_index_entries(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    keys = [f"{i}" * 43 for i in range(4)]
    for key in keys:
        await rstore.save(key, session_write(clock(), set={"a": "1"}, create=True, owner="u1"))
    await rstore.save("x" * 43, session_write(clock(), set={"a": "1"}, create=True, owner="u2"))
    ids = [public_id_for(hash_key(key)) for key in keys]

    assert await rstore.revoke("u1", ids[0]) == 1
    assert await rstore.revoke("u1", ids[0]) == 0
    assert await rstore.revoke("u2", ids[1]) == 0
    assert await rstore.revoke_all("u1", keep=ids[3]) == 2

    assert [s.public_id for s in await rstore.list_sessions("u1")] == [ids[3]]
    assert await rstore.load(keys[1]) is None
    assert await rstore.load(keys[3]) is not None
    assert sync_redis.zcard("asgi_sessions:owner:u1") == 1
    assert await rstore.revoke_all("u2") == 1
    assert await rstore.revoke_all("nobody") == 0


# -- devices (issue 25): one more field, m:d, written with the owner ----------------------

DEVICE = encode_device("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "203.0.113.0/24")


def with_device(change: SessionWrite, device: str | None) -> SessionWrite:
    return dataclasses.replace(change, device=device)


async def test_the_device_is_one_field_written_with_the_owner_and_kept_by_other_saves(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    name = f"asgi_sessions:{hash_key(KEY)}"
    first = session_write(clock(), set={"a": "1"}, create=True, owner="u1")
    await rstore.save(KEY, with_device(first, DEVICE))
    assert sync_redis.hget(name, "m:d") == DEVICE.encode()

    # The usual save (update.lua), a delete and a replace (write.lua) keep it, even when
    # they carry a device of their own: only an owner change writes one.
    await rstore.save(KEY, with_device(session_write(clock(), set={"b": "2"}), "junk"))
    await rstore.save(KEY, session_write(clock(), set={"c": "3"}, deleted=frozenset({"b"})))
    await rstore.save(KEY, session_write(clock(), set={"a": "4"}, replace=True))
    loaded = await rstore.load(KEY)
    assert loaded is not None
    assert (loaded.data, loaded.owner, loaded.device) == ({"a": "4"}, "u1", DEVICE)

    # An owner change writes the request's device; signing out (no owner, no device)
    # clears it.
    other = encode_device("curl/8.5.0", None)
    await rstore.save(KEY, with_device(session_write(clock(), owner="u2"), other))
    assert sync_redis.hget(name, "m:d") == other.encode()
    await rstore.save(KEY, session_write(clock(), owner=None))
    assert not sync_redis.hexists(name, "m:d")
    assert not sync_redis.hexists(name, "m:o")
    loaded = await rstore.load(KEY)
    assert loaded is not None
    assert (loaded.data, loaded.owner, loaded.device) == ({"a": "4"}, None, None)


async def test_a_session_whose_last_key_goes_is_deleted_with_its_device(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    first = session_write(clock(), set={"a": "1"}, create=True, owner="u1")
    await rstore.save(KEY, with_device(first, DEVICE))

    await rstore.save(KEY, session_write(clock(), deleted=frozenset({"a"})))

    # The device is metadata: a hash left with it and no key would be a session kept
    # without data.
    assert sync_redis.keys() == []


async def test_a_record_written_before_devices_were_kept_lists_with_an_unknown_device(
    rstore: RedisStore, sync_redis: redis.Redis, clock: FakeClock
) -> None:
    # The current layout minus m:d, as the release before devices wrote it.
    old = hash_key(KEY)
    ends = clock() + 3600
    sync_redis.hset(
        f"asgi_sessions:{old}",
        mapping={"d:user": '"ada"', "m:e": repr(ends), "m:c": repr(clock()),
                 "m:u": repr(clock()), "m:o": "u1"},
    )  # fmt: skip
    sync_redis.pexpireat(f"asgi_sessions:{old}", math.ceil(ends * 1000))
    sync_redis.zadd("asgi_sessions:owner:u1", {old: ends})
    clock.advance(1)
    await rstore.save("n" * 43, with_device(
        session_write(clock(), set={"user": '"ada"'}, create=True, owner="u1"), DEVICE
    ))  # fmt: skip

    listed = await rstore.list_sessions("u1")

    assert [(entry.public_id, entry.user_agent, entry.ip) for entry in listed] == [
        (public_id_for(old), None, None),
        (public_id_for(hash_key("n" * 43)), *decode_device(DEVICE)),
    ]
    assert listed[0].label == "Unknown device"
    loaded = await rstore.load(KEY)
    assert loaded is not None and loaded.device is None
    # It takes saves as before; the first owner change gives it a device.
    await rstore.save(KEY, session_write(clock(), set={"b": "2"}))
    await rstore.save(KEY, session_write(clock(), deleted=frozenset({"b"})))
    assert [entry.user_agent for entry in await rstore.list_sessions("u1")] == [
        None,
        decode_device(DEVICE)[0],
    ]
    await rstore.save(KEY, with_device(session_write(clock(), owner="u2"), DEVICE))
    (moved,) = await rstore.list_sessions("u2")
    assert (moved.user_agent, moved.ip) == decode_device(DEVICE)


# -- client ownership and the optional dependency ---------------------------------------


async def test_from_url_closes_the_client_it_built_once(redis_url: str) -> None:
    store = RedisStore.from_url(redis_url)
    closes = 0
    original = store.client.aclose

    async def counted(*args: Any, **kwargs: Any) -> None:
        nonlocal closes
        closes += 1
        await original(*args, **kwargs)

    store.client.aclose = counted  # type: ignore[method-assign]
    await store.load(KEY)

    await store.aclose()
    await store.aclose()

    assert closes == 1


async def test_a_store_given_a_client_leaves_it_open(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        async with RedisStore(client) as store:
            await store.load(KEY)
        assert await client.ping()
    finally:
        await client.aclose()


def test_without_redis_the_store_raises_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in sys.modules if name == "redis" or name.startswith("redis.")]:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]

    with pytest.raises(MissingDependency) as raised:
        RedisStore.from_url("redis://localhost")
    with pytest.raises(ImportError, match=r"pip install 'asgi-server-sessions\[redis\]'"):
        RedisStore(None)  # type: ignore[arg-type]

    assert str(raised.value) == (
        "'redis' is not installed. Install it with: pip install 'asgi-server-sessions[redis]'"
    )


def test_asgi_sessions_imports_without_redis() -> None:
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "import asgi_sessions\n"
        "from asgi_sessions import RedisStore, MissingDependency\n"
        "try:\n"
        "    RedisStore.from_url('redis://localhost')\n"
        "except MissingDependency as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert "pip install 'asgi-server-sessions[redis]'" in result.stdout


# -- failure ----------------------------------------------------------------------------


def session_app(store: RedisStore) -> Starlette:
    async def write(request: Request) -> JSONResponse:
        session = await request.state.session
        session["user"] = "ada"
        return JSONResponse({"ok": True})

    async def read(request: Request) -> JSONResponse:
        session = await request.state.session
        return JSONResponse({"user": session.get("user")})

    async def untouched(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[Route("/write", write), Route("/read", read), Route("/untouched", untouched)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )


async def test_an_outage_fails_session_requests_only_and_the_cookie_survives_it(
    redis_process: RedisProcess,
) -> None:
    async with RedisStore.from_url(redis_process.url, socket_timeout=1) as store:
        transport = httpx.ASGITransport(app=session_app(store), raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            written = await client.get("/write")
            assert written.status_code == 200
            cookie = client.cookies["session"]

            redis_process.stop()
            failed = await client.get("/read")
            untouched = await client.get("/untouched")

            assert failed.status_code >= 500
            assert "set-cookie" not in failed.headers
            assert untouched.status_code == 200
            # A first save fails as loudly as a load.
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as new:
                first = await new.get("/write")
            assert first.status_code >= 500
            # A create whose outcome is unknown sends the key it tried (never a deletion).
            assert "max-age=0" not in first.headers["set-cookie"].lower()

            redis_process.start()
            recovered = await client.get("/read")

    assert client.cookies["session"] == cookie
    assert recovered.status_code == 200
    assert recovered.json() == {"user": "ada"}


@pytest.mark.parametrize("operation", ["load", "save", "delete", "list_sessions", "revoke_all"])
async def test_every_operation_on_an_unreachable_server_raises_a_store_error_that_names_it(
    operation: str, clock: FakeClock
) -> None:
    port = free_port()  # nobody listens there
    calls = {
        "load": lambda store: store.load(KEY),
        "save": lambda store: store.save(KEY, session_write(clock(), set={"a": "1"}, create=True)),
        "delete": lambda store: store.delete(KEY),
        "list_sessions": lambda store: store.list_sessions("u1"),
        "revoke_all": lambda store: store.revoke_all("u1"),
    }
    async with RedisStore.from_url(f"redis://127.0.0.1:{port}/3") as store:
        with pytest.raises(SessionStoreError, match=rf"redis://127\.0\.0\.1:{port}/3") as raised:
            await calls[operation](store)

    assert isinstance(raised.value.__cause__, redis.exceptions.ConnectionError)


async def test_a_unix_socket_server_is_named_by_its_path() -> None:
    client = redis.asyncio.Redis(unix_socket_path="/nonexistent/redis.sock")
    try:
        with pytest.raises(SessionStoreError, match=r"unix:///nonexistent/redis\.sock"):
            await RedisStore(client).load(KEY)
    finally:
        await client.aclose()


def test_a_bad_url_or_an_empty_prefix_is_a_configuration_error() -> None:
    with pytest.raises(ImproperlyConfigured, match="'http://localhost'"):
        RedisStore.from_url("http://localhost")
    client = redis.asyncio.Redis()
    with pytest.raises(ImproperlyConfigured, match="prefix"):
        RedisStore(client, prefix="")


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server on loopback that reads everything and never answers; yields its port."""
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while await reader.read(4096):
            pass  # read everything, answer nothing

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_server_that_never_answers_fails_a_load_within_the_socket_timeout() -> None:
    async with silent_server() as port:
        async with RedisStore.from_url(f"redis://127.0.0.1:{port}", socket_timeout=0.5) as store:
            started = time.monotonic()
            with pytest.raises(SessionStoreError, match="Timeout"):
                await store.load(KEY)
            elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 1.5


async def test_waiting_for_a_free_connection_gives_up_after_the_pool_timeout() -> None:
    async with silent_server() as port:
        url = f"redis://127.0.0.1:{port}"
        async with RedisStore.from_url(
            url, socket_timeout=2, max_connections=1, pool_timeout=0.2
        ) as store:
            stuck = asyncio.ensure_future(store.load(KEY))  # holds the only connection
            await asyncio.sleep(0.05)
            started = time.monotonic()
            with pytest.raises(SessionStoreError, match=r"no free connection within 0\.2 s"):
                await store.load(KEY)
            assert time.monotonic() - started < 1.0
            with pytest.raises(SessionStoreError):
                await stuck


async def test_the_gate_lets_waiters_through_in_the_order_they_came() -> None:
    gate = Gate(1)
    assert gate.take_now()
    order: list[int] = []

    async def wait(i: int) -> None:
        await gate.take()
        order.append(i)
        gate.give()

    waiters = [asyncio.ensure_future(wait(i)) for i in range(5)]
    await asyncio.sleep(0)
    assert not gate.take_now()  # a free slot never jumps the queue
    gate.give()
    await asyncio.gather(*waiters)

    assert order == [0, 1, 2, 3, 4]
    assert gate.free == 1


async def test_a_waiter_that_gives_up_leaves_no_slot_taken() -> None:
    gate = Gate(1)
    assert gate.take_now()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await gate.take()
    gate.give()

    assert gate.free == 1
    assert gate.take_now()


async def test_a_slot_handed_to_a_waiter_that_gives_up_at_that_moment_passes_on() -> None:
    gate = Gate(1)
    assert gate.take_now()
    first = asyncio.ensure_future(gate.take())
    second = asyncio.ensure_future(gate.take())
    await asyncio.sleep(0)
    gate.give()  # hands the slot to the first waiter...
    first.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await second  # the slot went on to the next waiter

    gate.give()
    assert gate.free == 1


async def test_a_burst_past_the_pool_size_waits_for_connections_instead_of_failing(
    redis_url: str,
) -> None:
    import asyncio

    async with RedisStore.from_url(redis_url, max_connections=8) as store:
        change = session_write(time.time(), set={"a": "1"}, create=True, replace=True, ttl=60)
        await store.save("burst-key".ljust(43, "x"), change)
        loaded = await asyncio.gather(*(store.load("burst-key".ljust(43, "x")) for _ in range(150)))
        assert all(record is not None and record.data == {"a": "1"} for record in loaded)

"""RedisStore on a Redis Cluster and behind Sentinel: what only those topologies do.

The behaviour every store shares runs on both through the ``store`` fixture
(``redis-cluster``, ``redis-sentinel``); these tests look at slots, keys, round trips,
replication and the cluster's own moves.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from redis.crc import key_slot
from starlette.requests import Request

from asgi_sessions import Session, SessionStoreError, Store, store_from_url
from asgi_sessions.devices import decode_device, encode_device
from asgi_sessions.errors import ImproperlyConfigured, SessionInterrupted
from asgi_sessions.stores.base import SessionWrite, hash_key, public_id_for
from asgi_sessions.stores.redis import RedisStore
from asgi_sessions.stores.redis_layout import tag_of
from bench.suites.cluster import counting as round_trips  # one counter for bench and tests
from tests.clock import FakeClock
from tests.redis_cluster import RedisClusterSet, RedisSentinelSet, cluster_replica, frozen
from tests.support import app_with, client_for, cookie_value, sent


def key_of(response: httpx.Response) -> str:
    return cookie_value(response).rpartition(".")[0]


async def _read(session: Session, request: Request) -> Any:
    return {"data": session.copy(), "key": session.session_key}


async def _put(session: Session, request: Request) -> Any:
    session.update(request.query_params)
    return {}


async def _login(session: Session, request: Request) -> Any:
    session["user"] = session.owner = request.query_params["user"]
    return {}


async def _logout(session: Session, request: Request) -> Any:
    await session.flush()
    return {}


HANDLERS = {"read": _read, "put": _put, "login": _login, "logout": _logout}


def change(now: float, **fields: Any) -> SessionWrite:
    values: dict[str, Any] = {
        "set": {},
        "deleted": frozenset(),
        "replace": False,
        "create": False,
        "now": now,
        "default_expires_at": now + 3600,
        "expires_cap": None,
        "created_at": now,
    }
    values.update(fields)
    return SessionWrite(**values)


@pytest.fixture
async def cluster_store(redis_cluster_url: str, clock: FakeClock) -> AsyncIterator[RedisStore]:
    async with RedisStore.from_url(redis_cluster_url, clock=clock) as store:
        yield store


@pytest.fixture
def cluster_masters(redis_cluster: RedisClusterSet) -> Iterator[list[redis.Redis]]:
    clients = [
        redis.Redis(port=node.port, decode_responses=True) for node in redis_cluster.masters()
    ]
    yield clients
    for client in clients:
        client.close()


def dump(masters: list[redis.Redis]) -> dict[str, Any]:
    """Every key on the cluster, with its type."""
    return {name: master.type(name) for master in masters for name in master.keys("*")}


def holder(cluster: RedisClusterSet, name: str) -> redis.Redis:
    """A client of the master that serves ``name``'s slot."""
    master = cluster.master_for_slot(key_slot(name.encode()))
    return redis.Redis(port=master.port, decode_responses=True)


def failed_commands(masters: list[redis.Redis]) -> dict[str, Any]:
    """Data commands the masters refused (CROSSSLOT, ...) or that failed (a script error),
    leaving out the connection set-up commands Redis 7.0 does not know (CLIENT SETINFO)."""
    failed = {}
    for master in masters:
        assert "errorstat_CROSSSLOT" not in master.info("errorstats")
        for command, stats in master.info("commandstats").items():
            if command.startswith(("cmdstat_client", "cmdstat_hello")):
                continue
            if stats.get("rejected_calls", 0) or stats.get("failed_calls", 0):
                failed[command] = stats
    return failed


async def preload_scripts(store: RedisStore) -> None:
    """Load every script on every master, so that no NOSCRIPT reply muddles the figures."""
    for script in store.scripts:
        await store.client.script_load(script.script)


# -- slots ----------------------------------------------------------------------------


async def test_every_operation_runs_on_the_cluster_without_a_crossslot_error(
    cluster_store: RedisStore, cluster_masters: list[redis.Redis], clock: FakeClock
) -> None:
    await preload_scripts(cluster_store)
    for master in cluster_masters:
        master.config_resetstat()
    app = app_with(cluster_store, HANDLERS)
    async with client_for(app) as client:
        first = await client.get("/put", params={"cart": "1"})  # create
        await client.get("/read")  # load
        await client.get("/put", params={"cart": "2"})  # merge
        await client.get("/login", params={"user": "ada"})  # move into ada's slot
        session = (await client.get("/read")).json()
        stale = await client.get("/put", params={"x": "1"}, headers=sent(cookie_value(first)))
        assert stale.status_code == 200  # the old key is dead: a new session, not the old one
        for _ in range(3):  # ada on other devices, logged in later
            clock.advance(1)
            async with client_for(app) as device:
                response = await device.get("/login", params={"user": "ada"})
                assert response.status_code == 200
        listed = await cluster_store.list_sessions("ada")
        assert len(listed) == 4
        assert await cluster_store.revoke("ada", listed[-1].public_id) == 1
        record = await cluster_store.get(session["key"])
        assert record is not None and record.owner == "ada"
        assert await cluster_store.clear_expired() == 0
        assert await cluster_store.revoke_all("ada", keep=listed[0].public_id) == 2
        await client.get("/logout")  # flush
    # No CROSSSLOT refusal, and no script that touched a key in another slot.
    assert failed_commands(cluster_masters) == {}


async def test_an_owners_sessions_and_index_share_one_slot(
    cluster_store: RedisStore, cluster_masters: list[redis.Redis]
) -> None:
    app = app_with(cluster_store, HANDLERS)
    for _ in range(3):
        async with client_for(app) as client:
            await client.get("/put", params={"a": "1"})
            await client.get("/login", params={"user": "grace"})

    names = dump(cluster_masters)
    (index,) = [name for name, kind in names.items() if kind == "zset"]
    tag = index.partition("{")[2].partition("}")[0]
    assert index == f"asgi_sessions:{{{tag}}}owner:grace"
    sessions = [
        name
        for name in names
        if name.startswith(f"asgi_sessions:{{{tag}}}") and not name.endswith(":ack")
    ]
    assert len(sessions) == 4  # the index and grace's three sessions
    assert len({key_slot(name.encode()) for name in sessions}) == 1


async def test_sessions_without_an_owner_spread_over_the_slots(cluster_store: RedisStore) -> None:
    async with client_for(app_with(cluster_store, HANDLERS)) as client:
        keys = []
        for _ in range(40):
            client.cookies.clear()
            keys.append(key_of(await client.get("/put", params={"a": "1"})))

    assert len({key_slot(cluster_store.layout.name(key).encode()) for key in keys}) > 30


async def test_a_prefix_keeps_working_and_a_brace_in_it_is_refused(
    redis_cluster_url: str, cluster_masters: list[redis.Redis], clock: FakeClock
) -> None:
    async with RedisStore.from_url(redis_cluster_url, prefix="app1:", clock=clock) as store:
        saved = await store.create(change(clock(), set={"a": '"1"'}, create=True))

        names = [name for name in dump(cluster_masters) if not name.endswith(":ack")]
        assert names == [f"app1:{{{tag_of(saved.key)}}}{hash_key(saved.key)}"]
        assert await store.load(saved.key) is not None
    with pytest.raises(ImproperlyConfigured, match="every session would land on one node"):
        RedisStore.from_url(redis_cluster_url, prefix="{sessions}:")


# -- moves between slots ------------------------------------------------------------------


async def test_a_login_moves_the_session_to_its_owners_slot_and_kills_the_old_key(
    cluster_store: RedisStore, redis_cluster: RedisClusterSet, clock: FakeClock
) -> None:
    created = await cluster_store.create(change(clock(), set={"cart": "[1]"}, create=True))

    moved = await cluster_store.rotate(
        created.key, change(clock(), set={"user": '"ada"'}, owner="ada", owner_changed=True)
    )

    assert tag_of(moved.key) != tag_of(created.key)
    assert await cluster_store.load(created.key) is None
    loaded = await cluster_store.load(moved.key)
    assert loaded is not None
    assert (loaded.data, loaded.owner) == ({"cart": "[1]", "user": '"ada"'}, "ada")
    # The old record stays only as a sealed copy that expires within a minute.
    sealed = cluster_store.layout.name(created.key)
    with holder(redis_cluster, sealed) as master:
        assert master.hget(sealed, "m:m") == cluster_store.layout.member(moved.key)
        assert 0 < master.pttl(sealed) <= 60_000
    with pytest.raises(SessionInterrupted):
        await cluster_store.save(created.key, change(clock(), set={"late": "1"}))


async def test_with_rotation_off_a_new_owner_still_gets_a_new_key_and_no_owner_keeps_it(
    cluster_store: RedisStore, clock: FakeClock
) -> None:
    created = await cluster_store.create(change(clock(), set={"a": "1"}, create=True))

    bound = await cluster_store.save(created.key, change(clock(), owner="ada", owner_changed=True))
    unbound = await cluster_store.save(bound.key, change(clock(), owner=None, owner_changed=True))

    assert cluster_store.new_key_on_owner_change
    assert bound.key != created.key
    assert unbound.key == bound.key
    assert await cluster_store.list_sessions("ada") == []


async def test_a_move_that_fails_half_way_leaves_the_old_session_alive(
    cluster_store: RedisStore,
    redis_cluster: RedisClusterSet,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    created = await cluster_store.create(
        change(clock(), set={"cart": "[1]"}, create=True, owner="bob", owner_changed=True)
    )
    real_merge = cluster_store._merge

    async def node_dies_before_the_create(
        key: str, new_key: str, write: SessionWrite, **kw: Any
    ) -> Any:
        if write.create:  # the second step of the move: the new slot's master is gone
            raise SessionStoreError("Redis failed while saving a session (ConnectionError)")
        return await real_merge(key, new_key, write, **kw)

    monkeypatch.setattr(cluster_store, "_merge", node_dies_before_the_create)
    with pytest.raises(SessionStoreError):
        await cluster_store.rotate(created.key, change(clock(), owner="ada", owner_changed=True))
    monkeypatch.undo()

    loaded = await cluster_store.load(created.key)
    assert loaded is not None
    assert (loaded.data, loaded.owner) == ({"cart": "[1]"}, "bob")
    assert len(await cluster_store.list_sessions("bob")) == 1
    assert await cluster_store.list_sessions("ada") == []
    name = cluster_store.layout.name(created.key)
    with holder(redis_cluster, name) as master:
        assert master.pttl(name) > 60_000  # its own end again, not the sealed copy's minute


async def test_a_move_to_another_slot_takes_the_device_of_the_request_that_moved_it(
    cluster_store: RedisStore,
    redis_cluster: RedisClusterSet,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    laptop = encode_device("Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", None)
    phone = encode_device("Mozilla/5.0 (iPhone) Safari/604.1", "203.0.113.0/24")
    created = await cluster_store.create(
        change(clock(), set={"cart": "[1]"}, create=True, owner="bob", owner_changed=True,
               device=laptop)
    )  # fmt: skip
    real_merge = cluster_store._merge

    async def node_dies_before_the_create(
        key: str, new_key: str, write: SessionWrite, **kw: Any
    ) -> Any:
        if write.create:
            raise SessionStoreError("Redis failed while saving a session (ConnectionError)")
        return await real_merge(key, new_key, write, **kw)

    # A failed move gives the old record back with its own device.
    monkeypatch.setattr(cluster_store, "_merge", node_dies_before_the_create)
    with pytest.raises(SessionStoreError):
        await cluster_store.save(
            created.key, change(clock(), owner="ada", owner_changed=True, device=phone)
        )
    monkeypatch.undo()
    (bobs,) = await cluster_store.list_sessions("bob")
    assert (bobs.user_agent, bobs.ip) == decode_device(laptop)

    moved = await cluster_store.save(
        created.key,
        change(clock(), set={"user": '"ada"'}, owner="ada", owner_changed=True, device=phone),
    )

    assert tag_of(moved.key) != tag_of(created.key)
    assert await cluster_store.list_sessions("bob") == []
    (entry,) = await cluster_store.list_sessions("ada")
    assert (entry.public_id, entry.user_agent, entry.ip) == (
        public_id_for(hash_key(moved.key)),
        *decode_device(phone),
    )
    loaded = await cluster_store.load(moved.key)
    assert loaded is not None
    assert (loaded.owner, loaded.device) == ("ada", phone)
    # Later saves and a rotation inside the slot keep it.
    await cluster_store.save(moved.key, change(clock(), set={"b": "2"}))
    rotated = await cluster_store.rotate(moved.key, change(clock(), set={"c": "3"}))
    assert tag_of(rotated.key) == tag_of(moved.key)
    name = cluster_store.layout.name(rotated.key)
    with holder(redis_cluster, name) as master:
        assert master.hget(name, "m:d") == phone
    # Signing out clears it where the session stays.
    await cluster_store.save(rotated.key, change(clock(), owner=None, owner_changed=True))
    with holder(redis_cluster, name) as master:
        assert master.hmget(name, ["m:o", "m:d"]) == [None, None]


async def test_every_process_finds_the_same_slot_key_even_after_a_flushall(
    redis_cluster_url: str, cluster_masters: list[redis.Redis], clock: FakeClock
) -> None:
    async with (
        RedisStore.from_url(redis_cluster_url, clock=clock) as one,
        RedisStore.from_url(redis_cluster_url, clock=clock) as two,
    ):
        assert await one._owner_tag("ada") == await two._owner_tag("ada")
        for master in cluster_masters:
            master.flushall()
        one._slot_key_read_at = 0  # its minute is up: it reads the key again, and restores it
        tag = await one._owner_tag("ada")
        async with RedisStore.from_url(redis_cluster_url, clock=clock) as three:
            assert await three._owner_tag("ada") == tag == await two._owner_tag("ada")


# -- round trips ----------------------------------------------------------------------


async def test_requests_cost_the_same_round_trips_on_every_topology_but_a_cluster_login(
    redis_store: Store,
) -> None:
    assert isinstance(redis_store, RedisStore)
    app = app_with(redis_store, HANDLERS)
    async with client_for(app) as client:
        # Warm up: connections, the cluster's slot map, the scripts, the slot key, and
        # what each master said about its replicas.
        await client.get("/put", params={"a": "1"})
        await client.get("/login", params={"user": "warm"})
        await preload_scripts(redis_store)
        for _ in range(40):  # new sessions on every master: each has been asked about replicas
            client.cookies.clear()
            await client.get("/put", params={"a": "1"})
        client.cookies.clear()
        costs = {}
        for name, path, params in [
            ("first write", "/put", {"a": "1"}),
            ("untouched", "/untouched", {}),
            ("read", "/read", {}),
            ("write", "/put", {"b": "2"}),
            ("login", "/login", {"user": "ada"}),
        ]:
            with round_trips() as count:
                assert (await client.get(path, params=params)).status_code == 200
            costs[name] = count[0]

    login = 3 if redis_store.layout.cluster else 2  # load, then seal and create in two slots
    assert costs == {"first write": 1, "untouched": 0, "read": 1, "write": 2, "login": login}


# -- replication ------------------------------------------------------------------------


@pytest.mark.parametrize("topology", ["cluster", "sentinel"])
async def test_a_write_its_replica_has_not_confirmed_fails_closed(
    topology: str, request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    url = request.getfixturevalue(f"redis_{topology}_url")
    async with store_from_url(url, clock=clock, replica_timeout=0.2) as store:
        assert isinstance(store, RedisStore)
        app = app_with(store, HANDLERS)
        async with client_for(app) as client:
            cookie = sent(cookie_value(await client.get("/put", params={"n": "1"})))
            name = store.layout.name(key_of_cookie(cookie))
            if topology == "cluster":
                replica = cluster_replica(request.getfixturevalue("redis_cluster"), name)
            else:
                topo: RedisSentinelSet = request.getfixturevalue("redis_sentinel")
                replica = next(s for s in topo.data if s.port != topo.master_port())
            with frozen(replica):
                refused = await client.get("/put", params={"n": "2"}, headers=cookie)
            assert refused.status_code == 503
            assert "set-cookie" not in refused.headers
            # The replica is back: writes are acknowledged again, by it too.
            assert (await client.get("/put", params={"n": "3"}, headers=cookie)).status_code == 200
            stored = (await client.get("/read", headers=cookie)).json()["data"]
            assert stored["n"] == "3"


def key_of_cookie(headers: dict[str, str]) -> str:
    return headers["cookie"].partition("=")[2].rpartition(".")[0]


# -- the command line ---------------------------------------------------------------------


async def test_the_cli_shows_lists_and_revokes_sessions_on_a_cluster(
    cluster_store: RedisStore, redis_cluster_url: str, clock: FakeClock, capsys: Any
) -> None:
    from asgi_sessions.cli import main

    created = [
        await cluster_store.create(
            change(time.time(), set={"n": str(n)}, create=True, owner="ann", owner_changed=True)
        )
        for n in range(3)
    ]

    def cli(*argv: str) -> tuple[int, str]:
        status = main(list(argv))
        return status, capsys.readouterr().out

    status, out = await asyncio.to_thread(cli, "show", redis_cluster_url, created[0].key, "--json")
    assert (status, json.loads(out)["data"]) == (0, {"n": 0})
    status, out = await asyncio.to_thread(cli, "sessions", redis_cluster_url, "ann", "--json")
    assert (status, len(json.loads(out))) == (0, 3)
    keep = json.loads(out)[0]["public_id"]
    status, out = await asyncio.to_thread(cli, "stats", redis_cluster_url, "--json")
    assert (status, json.loads(out)["sessions"], json.loads(out)["owners"]) == (0, 3, 1)
    assert await asyncio.to_thread(cli, "revoke", redis_cluster_url, "ann", "--keep", keep) == (
        0,
        "2\n",
    )
    assert await asyncio.to_thread(cli, "clear-expired", redis_cluster_url) == (0, "0\n")
    assert len(await cluster_store.list_sessions("ann")) == 1


async def test_a_caller_cannot_choose_the_key_of_an_owned_session_on_a_cluster(
    cluster_store: RedisStore, clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match=r"create it with store.create\(change\)"):
        await cluster_store.save(
            "chosen-key", change(clock(), create=True, owner="ann", owner_changed=True)
        )

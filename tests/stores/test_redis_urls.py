"""Redis URLs for one server, a Cluster and Sentinel: parsed once, never shown with a password."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asgi_sessions import store_from_url
from asgi_sessions.errors import ImproperlyConfigured
from asgi_sessions.stores.redis import RedisStore
from asgi_sessions.stores.redis_url import RedisURL, connect, parse_redis_url
from tests.redis_cluster import RedisClusterSet, RedisSentinelSet

SECRET = "s3cret-p4ss"


def test_a_cluster_url_names_its_seed_nodes() -> None:
    url = parse_redis_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002")

    assert url.kind == "cluster"
    assert url.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert (url.tls, url.db, url.service) == (False, 0, None)


def test_a_seed_without_a_port_uses_6379_and_a_sentinel_26379() -> None:
    assert parse_redis_url("redis+cluster://cache").nodes == (("cache", 6379),)
    assert parse_redis_url("redis+sentinel://s1,s2/main").nodes == (
        ("s1", 26379),
        ("s2", 26379),
    )


def test_a_sentinel_url_names_the_service_and_the_database() -> None:
    url = parse_redis_url(f"rediss+sentinel://app:{SECRET}@s1:26379,s2:26380/main/3")

    assert url.kind == "sentinel"
    assert url.tls
    assert url.nodes == (("s1", 26379), ("s2", 26380))
    assert (url.service, url.db) == ("main", 3)
    assert (url.username, url.password) == ("app", SECRET)


def test_a_percent_encoded_password_is_decoded() -> None:
    url = parse_redis_url("rediss+cluster://:p%40ss%3Aword@node:7000")

    assert (url.username, url.password, url.tls) == (None, "p@ss:word", True)


def test_query_options_are_cast_to_the_clients_types() -> None:
    url = parse_redis_url("redis+cluster://node:7000?socket_timeout=0.5&ssl_cert_reqs=none")

    assert url.options == {"socket_timeout": 0.5, "ssl_cert_reqs": "none"}


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+cluster://", "names no seed node"),
        ("redis+sentinel:///main", "names no Sentinel"),
        ("redis+sentinel://s1:26379", "names no service"),
        ("redis+sentinel://s1:26379/main/0/extra", "too many path parts"),
        ("redis+cluster://node:7000/2", "a cluster has only database 0"),
        ("redis+cluster://node:http", "a port is a number"),
        ("redis+cluster://node:70000", "a port is a number"),
        ("redis+cluster://[::1:7000", "malformed IPv6 address"),
        ("redis+sentinel://s1/main/zero", "a database is a number"),
        ("redis://a:6379,b:6379", "For a Redis Cluster use"),
        ("redis+cluster://node?socket_timeout=soon", "invalid value for 'socket_timeout'"),
        ("redis+cluster://node?db=1", "put it in the path"),
        ("memcached://node", "is not a Redis URL"),
        ("redis+cluster://:7000", "an address with no host"),
    ],
)
def test_a_malformed_url_says_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=complaint):
        parse_redis_url(url)


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis://localhost:6379/sessions", "names the database 'sessions'"),
        ("rediss://localhost:6379/sessions", "names the database 'sessions'"),
        ("redis://localhost:6379/1/2", "too many path parts"),
        ("REDISS://localhost/0/1", "too many path parts"),
        ("redis://localhost/db0", "a database is a number"),
        ("redis://localhost/-1", "a database is a number"),
        ("redis://localhost/\u00b2", "a database is a number"),  # "²".isdigit() is True
    ],
)
def test_a_one_server_url_refuses_a_path_that_is_not_a_database_number(
    url: str, complaint: str
) -> None:
    """redis-py reads ``/sessions`` as database 0 and ``/1/2`` as database 12, silently;
    the cluster and Sentinel schemes refuse them, and so does redis:// now."""
    with pytest.raises(ImproperlyConfigured, match=complaint):
        RedisStore.from_url(url)
    with pytest.raises(ImproperlyConfigured, match=complaint):
        store_from_url(url)


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("redis://localhost", 0),
        ("redis://localhost:6379", 0),
        ("redis://localhost:6379/", 0),
        ("redis://localhost:6379/3", 3),
        ("rediss://localhost:6380/15", 15),
        ("redis://localhost/%33", 3),
        ("redis://localhost/2?socket_timeout=0.5", 2),
        ("redis://localhost/2#fragment", 2),
        ("redis://localhost/2?client_name=a/b", 2),  # a slash in the query is no path
        (f"redis://:{SECRET}@localhost/4", 4),
    ],
)
async def test_a_one_server_url_with_no_path_a_slash_or_a_database_number_opens(
    url: str, db: int
) -> None:
    store = RedisStore.from_url(url)  # builds a client; connects on first use
    try:
        client = store._owned_clients.client  # type: ignore[union-attr]
        assert client.connection_pool.connection_kwargs.get("db", 0) == db
    finally:
        await store.aclose()


def test_a_refused_one_server_url_does_not_repeat_its_password() -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        RedisStore.from_url(f"redis://app:{SECRET}@localhost/sessions")

    assert SECRET not in str(raised.value)
    assert "redis://app:***@localhost/sessions" in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        f"redis+cluster://user:{SECRET}@node:http",
        f"redis+sentinel://:{SECRET}@s1:26379",
        f"redis+sentinel://s1:26379?sentinel_password={SECRET}",
        f"redis+cluster://node:7000?password={SECRET}&socket_timeout=soon",
        f"rediss+sentinel://u:{SECRET}@[::1/main",
    ],
)
def test_no_error_message_repeats_a_password(url: str) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:
        parse_redis_url(url)

    assert SECRET not in str(raised.value)
    assert "***" in str(raised.value)


def test_the_parsed_url_shows_no_password_in_its_repr() -> None:
    url = parse_redis_url(f"redis+sentinel://app:{SECRET}@s1/main?sentinel_password={SECRET}")

    assert SECRET not in repr(url)
    assert url.shown == "redis+sentinel://app:***@s1/main?sentinel_password=***"


async def _round_trip(url: RedisURL) -> str:
    clients = connect(url, socket_timeout=2, socket_connect_timeout=2, max_connections=4)
    try:
        await clients.client.set("greeting", "hello")
        value: str = await clients.client.get("greeting")
        return value
    finally:
        await clients.aclose()


async def test_a_cluster_url_reaches_the_whole_cluster_from_one_seed(
    redis_cluster: RedisClusterSet, redis_cluster_url: str
) -> None:
    url = parse_redis_url(redis_cluster_url)

    assert len(url.nodes) == 1
    assert await _round_trip(url) == "hello"


async def test_a_sentinel_url_reaches_the_master_the_sentinels_name(
    redis_sentinel: RedisSentinelSet, redis_sentinel_url: str
) -> None:
    assert await _round_trip(parse_redis_url(redis_sentinel_url)) == "hello"


async def test_many_requests_finding_the_master_at_once_keep_every_sentinel(
    redis_sentinel: RedisSentinelSet, redis_sentinel_url: str
) -> None:
    clients = connect(
        parse_redis_url(redis_sentinel_url),
        socket_timeout=2,
        socket_connect_timeout=2,
        max_connections=4,
    )
    assert clients.sentinel is not None
    sentinels = clients.sentinel.sentinels
    before = set(map(id, sentinels))
    # As during a failover: the first Sentinel answers, but calls the master down, so
    # each lookup moves another Sentinel to the front of the list.
    first = sentinels[0]
    real = first.sentinel_masters

    async def master_is_down() -> Any:
        masters = await real()
        for state in masters.values():
            state["is_sdown"] = True
        return masters

    first.sentinel_masters = master_is_down  # type: ignore[method-assign]
    try:
        await asyncio.gather(
            *(clients.sentinel.discover_master(redis_sentinel.service) for _ in range(10))
        )
        assert set(map(id, clients.sentinel.sentinels)) == before  # none lost, none twice
    finally:
        await clients.aclose()

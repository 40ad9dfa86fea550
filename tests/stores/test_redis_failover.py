"""A master dies under a running app: its requests fail closed, then succeed again on the
promoted replica, with no restart of the app and no acknowledged write lost.

Each test has a topology of its own (quick failure detection) and runs once; the driver
is ``bench/suites/cluster.py``'s, which ``python -m bench cluster`` also uses to report
the windows.
"""

from __future__ import annotations

from redis.crc import key_slot

from asgi_sessions import store_from_url
from asgi_sessions.stores.redis import RedisStore
from bench.suites.cluster import FailoverRun, failover_app, run_failover
from tests.redis_cluster import RedisClusterSet, RedisSentinelSet


def assert_failed_closed_then_recovered(run: FailoverRun) -> None:
    assert run.crashes == []
    failed = run.failed(victim=True)
    assert failed, "the dead master's sessions never failed: was it the right master?"
    assert {attempt.status for attempt in failed} == {503}
    assert not any(attempt.set_cookie for attempt in failed)  # the cookie is left alone
    last = max(attempt.at for attempt in failed)
    assert any(a.victim and a.status == 200 and a.at > last for a in run.attempts)
    assert run.lost == []


async def test_a_cluster_master_dies_and_its_sessions_fail_closed_until_the_replica_serves(
    private_redis_cluster: RedisClusterSet,
) -> None:
    cluster = private_redis_cluster
    doomed = cluster.master_for_slot(0)
    async with store_from_url(cluster.url) as store:
        assert isinstance(store, RedisStore)

        def victim_of(key: str) -> bool:
            return key_slot(store.layout.name(key).encode()) in doomed.slots

        def kill_and_wait() -> float:
            return cluster.wait_promoted(cluster.kill_master_of(0))

        run = await run_failover(
            failover_app(store), victim_of=victim_of, kill_and_wait=kill_and_wait
        )

    assert_failed_closed_then_recovered(run)
    # Sessions on the other masters never noticed.
    assert run.failed(victim=False) == []


async def test_a_sentinel_master_dies_and_requests_fail_closed_until_the_replica_serves(
    private_redis_sentinel: RedisSentinelSet,
) -> None:
    sentinel = private_redis_sentinel
    async with store_from_url(sentinel.url) as store:

        def kill_and_wait() -> float:
            return sentinel.wait_promoted(sentinel.kill_master())

        run = await run_failover(
            failover_app(store),
            victim_of=lambda key: True,
            kill_and_wait=kill_and_wait,
            bystanders=0,
        )

    assert_failed_closed_then_recovered(run)

"""Three app machines (uvicorn on 127.0.0.2, .3 and .4) on one Redis Cluster: a user's
requests alternate between them, several writers at once, and some users log out while
their writers still run. No write is lost and no logged-out session comes back.

The same run as ``python -m bench cluster --figures machines`` (longer there).
"""

from __future__ import annotations

from bench.suites.cluster import machines


def test_three_machines_on_one_cluster_lose_no_write_and_resurrect_no_session(
    redis_cluster_url: str,
) -> None:
    result = machines(redis_cluster_url, users=6, writers=3, seconds=2.0)

    assert result.errors == []
    assert result.lost_writes == 0
    assert result.resurrections == []
    assert result.requests > 6 * 3 * 3  # every writer got well past its first writes

"""Four uvicorn processes share one PostgreSQL database; concurrent writers to the same
sessions from different processes lose no write.

``python -m bench postgres --only processes`` is the timed version (writes/s); here every
writer makes a fixed number of writes, so a busy machine slows the test but cannot fail it.
"""

from __future__ import annotations

from bench.suites.postgres import processes


def test_four_processes_writing_one_session_at_once_lose_no_write(postgres_url: str) -> None:
    result = processes(postgres_url, processes=4, clients=6, writers=4, each=8)
    assert result.errors == []
    assert result.writes == 6 * 4 * 8
    assert result.lost_writes == 0
    assert len(result.pids) == 4

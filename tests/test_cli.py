"""``python -m asgi_sessions``: each command in-process through ``main()``, and once for real."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from asgi_sessions import store_from_url
from asgi_sessions.cli import main
from tests.support import encoded, session_write

ROOT = Path(__file__).resolve().parent.parent

# main() runs its own event loop with asyncio.run, so the tests call it on a worker
# thread: the test's loop (or one another plugin left running) stays out of its way.


async def seed(url: str, sessions: dict[str, tuple[dict[str, object], float, str | None]]) -> None:
    async with store_from_url(url) as store:
        for key, (data, ttl, owner) in sessions.items():
            now = time.time()
            created = now + ttl - 60 if ttl < 0 else now
            change = session_write(
                now, set=encoded(data), create=True, owner=owner, ttl=ttl, created_at=created
            )
            await store.save(key, change)


@pytest.fixture(params=["sqlite", "redis", "postgresql", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL holding two live sessions of "ann" and two expired ones."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
    else:  # both spellings of the PostgreSQL scheme
        dsn: str = request.getfixturevalue("postgres_url")
        url = request.param + dsn[dsn.index("://") :]
    await seed(
        url,
        {
            "live-key": ({"user": "ann", "cart": [1, 2]}, 3600, "ann"),
            "other-key": ({"n": 1}, 3600, "ann"),
            "old-key": ({"n": 2}, -10, None),
            "older-key": ({"n": 3}, -20, "ann"),
        },
    )
    return url


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return status, out, err


async def test_show_prints_the_session_as_json(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await run(capsys, "show", url, "live-key")
    assert (status, err) == (0, "")
    shown = json.loads(out)
    assert shown["session_key"] == "live-key"
    assert shown["data"] == {"user": "ann", "cart": [1, 2]}
    assert datetime.fromisoformat(shown["expire_date"]).utcoffset().total_seconds() == 0


@pytest.mark.parametrize("key", ["no-such-key", "old-key"])
async def test_show_of_an_unknown_or_expired_key_exits_1_with_one_line(
    url: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await run(capsys, "show", url, key)
    assert status == 1
    assert out == ""
    assert err.startswith("error: no live session") and err.count("\n") == 1


async def test_clear_expired_prints_how_many_were_removed(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Redis drops expired records itself, so it has none left to remove.
    removed = "0\n" if url.startswith("redis") else "2\n"
    assert await run(capsys, "clear-expired", url) == (0, removed, "")
    assert await run(capsys, "clear-expired", url) == (0, "0\n", "")


async def test_sessions_lists_the_owners_live_sessions_as_json_lines(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = await run(capsys, "sessions", url, "ann")
    lines = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert len(lines) == 2
    assert set(lines[0]) == {"public_id", "created", "last_saved", "expire_date"}


async def test_revoke_ends_all_but_the_kept_session_and_prints_the_count(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = await run(capsys, "sessions", url, "ann")
    first, second = (json.loads(line)["public_id"] for line in out.splitlines())
    assert await run(capsys, "revoke", url, "ann", "--keep", first) == (0, "1\n", "")
    assert await run(capsys, "revoke", url, "ann", "--only", second) == (0, "0\n", "")
    assert await run(capsys, "revoke", url, "ann", "--only", first) == (0, "1\n", "")
    assert await run(capsys, "sessions", url, "ann") == (0, "", "")


@pytest.mark.parametrize(
    "url",
    ["bogus://nowhere", "sqlite://", "sqlite:///does/not/exist.sqlite3"],
)
async def test_a_bad_url_exits_1_with_one_line_and_no_traceback(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await run(capsys, "clear-expired", url)
    assert status == 1
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1


async def test_a_store_error_exits_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    status, _, err = await run(capsys, "clear-expired", f"sqlite:///{tmp_path}")
    assert status == 1
    assert err.startswith("error: SQLite session store") and err.count("\n") == 1


async def test_a_memory_url_works_and_has_nothing_stored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = await run(capsys, "sessions", "memory://", "ann")
    assert (status, out, err) == (0, "", "")


def test_the_module_runs_with_help_for_every_command() -> None:
    for argv in ([], ["show"], ["clear-expired"], ["sessions"], ["revoke"]):
        done = subprocess.run(
            [sys.executable, "-m", "asgi_sessions", *argv, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert "usage: python -m asgi_sessions" in done.stdout

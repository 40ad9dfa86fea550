"""``python -m asgi_sessions``: each command in-process through ``main()``, and once for real."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import re
import subprocess
import sys
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pytest

import asgi_sessions
from asgi_sessions import store_from_url
from asgi_sessions.cli import main
from asgi_sessions.devices import encode_device
from tests.support import encoded, session_write

ROOT = Path(__file__).resolve().parents[2]

# main() runs its own event loop with asyncio.run, so the tests call it on a worker
# thread: the test's loop (or one another plugin left running) stays out of its way.


FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"


async def seed(url: str, sessions: dict[str, tuple[dict[str, object], float, str | None]]) -> None:
    async with store_from_url(url) as store:
        for key, (data, ttl, owner) in sessions.items():
            now = time.time()
            created = now + ttl - 60 if ttl < 0 else now
            # The first session signed in from Firefox at 198.51.100.0/24; the others
            # have no device recorded (as records from before devices were kept).
            device = encode_device(FIREFOX, "198.51.100.0/24") if key == "live-key" else None
            change = session_write(
                now,
                set=encoded(data),
                create=True,
                owner=owner,
                ttl=ttl,
                created_at=created,
                device=device,
            )
            await store.save(key, change)


@pytest.fixture(params=["sqlite", "redis", "redis-sentinel", "postgresql", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL holding two live sessions of "ann" and two expired ones.

    (On a Redis Cluster a session's key is minted by the store, so the cluster's CLI test
    seeds its own: tests/stores/test_redis_topologies.py.)"""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    elif request.param.startswith("redis"):
        url = request.getfixturevalue(request.param.replace("-", "_") + "_url")
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


async def test_show_prints_the_session_as_text(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await run(capsys, "show", url, "live-key")
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == ["session_key  live-key", "owner        ann"]
    assert re.fullmatch(r"created      \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[2])
    assert lines[3].startswith("expire_date  ") and lines[3].endswith(" UTC")
    assert lines[4] == "data         2 keys"
    assert sorted(lines[5:]) == ["  cart = [1, 2]", '  user = "ann"']


async def test_show_json_prints_one_json_object(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await run(capsys, "show", url, "live-key", "--json")
    assert (status, err) == (0, "")
    shown = json.loads(out)
    assert set(shown) == {"session_key", "owner", "created", "expire_date", "data"}
    assert (shown["session_key"], shown["owner"]) == ("live-key", "ann")
    assert shown["data"] == {"user": "ann", "cart": [1, 2]}
    for moment in (shown["created"], shown["expire_date"]):
        assert datetime.fromisoformat(moment).utcoffset().total_seconds() == 0


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


async def test_sessions_lists_the_owners_live_sessions_as_a_table(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await run(capsys, "sessions", url, "ann")
    assert (status, err) == (0, "")
    header, *rows = out.splitlines()
    assert header.split() == [
        "PUBLIC", "ID", "DEVICE", "IP", "CREATED", "LAST", "SEEN", "EXPIRES"
    ]  # fmt: skip
    listed = await public_ids(url, capsys)
    assert [row.split()[0] for row in rows] == listed
    assert all(row.count(" UTC") == 3 for row in rows)
    devices = sorted((row[26:50].rstrip(), row[52:70].rstrip()) for row in rows)
    assert devices == [("Firefox on Linux", "198.51.100.0/24"), ("Unknown device", "-")]
    assert await run(capsys, "sessions", url, "nobody") == (
        0,
        "'nobody' has no live sessions.\n",
        "",
    )


async def public_ids(url: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    status, out, _ = await run(capsys, "sessions", url, "ann", "--json")
    assert status == 0
    return [row["public_id"] for row in json.loads(out)]


async def test_sessions_json_prints_a_json_array(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = await run(capsys, "sessions", url, "ann", "--json")
    assert (status, err) == (0, "")
    rows = json.loads(out)
    assert len(rows) == 2
    assert set(rows[0]) == {
        "public_id", "device", "user_agent", "ip", "created", "last_seen", "expire_date"
    }  # fmt: skip
    devices = sorted((row["device"], row["user_agent"], row["ip"]) for row in rows)
    assert devices == [
        ("Firefox on Linux", FIREFOX, "198.51.100.0/24"),
        ("Unknown device", None, None),
    ]
    assert await run(capsys, "sessions", url, "nobody", "--json") == (0, "[]\n", "")


async def test_revoke_ends_all_but_the_kept_session_and_prints_the_count(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = await public_ids(url, capsys)
    assert await run(capsys, "revoke", url, "ann", "--keep", first) == (0, "1\n", "")
    # Already ended: an error, not a silent "0".
    status, out, err = await run(capsys, "revoke", url, "ann", "--only", second)
    assert (status, out) == (1, "")
    assert err.startswith("error: 'ann' has no live session whose public id starts with")
    assert await run(capsys, "revoke", url, "ann", "--only", first[:8]) == (0, "1\n", "")
    assert await public_ids(url, capsys) == []


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
    status, out, err = await run(capsys, "sessions", "memory://", "ann", "--json")
    assert (status, out, err) == (0, "[]\n", "")


def test_the_module_runs_with_help_for_every_command() -> None:
    for argv in ([], ["show"], ["clear-expired"], ["sessions"], ["revoke"], ["stats"]):
        done = subprocess.run(
            [sys.executable, "-m", "asgi_sessions", *argv, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        assert "usage: python -m asgi_sessions" in done.stdout


def test_version_prints_the_distribution_name_and_the_package_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asgi_sessions", "--version"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"asgi-server-sessions {asgi_sessions.__version__}\n"


def test_the_installed_metadata_carries_the_version_from_the_package() -> None:
    # One place for the version: hatchling reads __version__ into the metadata.
    assert importlib.metadata.version("asgi-server-sessions") == asgi_sessions.__version__


def test_usage_names_the_console_script_when_run_through_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["/usr/local/bin/asgi-server-sessions", "--help"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: asgi-server-sessions ")


async def test_stats_prints_sessions_expired_owners_and_size(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Redis drops expired records itself: none are left to count.
    expired = 0 if url.startswith("redis") else 2
    where = "memory" if url.startswith("redis") else "disk"
    status, out, err = await run(capsys, "stats", url)
    assert (status, err) == (0, "")
    rows = [re.split(r"  +", line) for line in out.splitlines()]
    assert rows[:3] == [
        ["sessions", "2"],
        ["expired", f"{expired} (not cleared yet)" if expired else "0"],
        ["owners", "1"],
    ]
    assert rows[3][0] == ("size on disk" if where == "disk" else "size in memory")
    assert re.fullmatch(r"[\d.]+ (bytes|kB|MB)( \([\d,]+ bytes\))?", rows[3][1])

    status, out, err = await run(capsys, "stats", url, "--json")
    stats = json.loads(out)
    assert (status, err) == (0, "")
    assert stats == {
        "sessions": 2,
        "expired": expired,
        "owners": 1,
        "size_bytes": stats["size_bytes"],
        "size_where": where,
        "import_markers": 0,
    }
    assert stats["size_bytes"] > 0


async def test_stats_of_a_cookie_store_exits_1_saying_why(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, out, err = await run(capsys, "stats", "cookie://")
    assert (status, out) == (1, "")
    assert err.startswith("error: CookieStore keeps no server-side record") and err.count("\n") == 1


def test_sizes_read_as_people_write_them() -> None:
    from asgi_sessions.cli import _size

    assert _size(512) == "512 bytes"
    assert _size(36_864) == "36.9 kB (36,864 bytes)"
    assert _size(250_000_000) == "250.0 MB (250,000,000 bytes)"
    assert _size(7 * 10**15) == "7000.0 TB (7,000,000,000,000,000 bytes)"


def on_a_terminal(argv: list[str], *, stdout_is_a_tty: bool) -> tuple[int, str, str]:
    """Run the CLI with stderr (and stdout, if asked) on a pseudo-terminal.

    Returns the exit status, what the terminal showed, and what went to a piped stdout.
    """
    import os
    import pty

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "asgi_sessions", *argv],
        cwd=ROOT,
        stdout=follower if stdout_is_a_tty else subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: every writer closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    piped = process.stdout.read() if process.stdout is not None else b""
    if process.stdout is not None:
        process.stdout.close()
    status = process.wait(timeout=30)
    return status, shown.decode().replace("\r\n", "\n"), piped.decode()


async def test_clear_expired_on_a_terminal_shows_progress_on_stderr(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    await seed(url, {f"old-{n}": ({"n": n}, -10, None) for n in range(3)})
    status, shown, piped = await asyncio.to_thread(
        on_a_terminal, ["clear-expired", url], stdout_is_a_tty=True
    )
    assert (status, piped) == (0, "")
    progress, count = shown.splitlines()
    assert re.fullmatch(r"clear-expired: 3 removed in \d+\.\d s, [\d,]+/s", progress)
    assert count == "3"


async def test_clear_expired_stays_quiet_when_stdout_is_not_a_terminal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sessions.sqlite3'}"
    await seed(url, {f"old-{n}": ({"n": n}, -10, None) for n in range(3)})
    status, shown, piped = await asyncio.to_thread(
        on_a_terminal, ["clear-expired", url], stdout_is_a_tty=False
    )
    assert (status, shown, piped) == (0, "", "3\n")


def test_progress_lines_show_count_share_and_rate_at_most_once_a_second() -> None:
    import io

    from asgi_sessions._progress import ProgressLine

    moments = iter([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    stream = io.StringIO()
    progress = ProgressLine("clear-expired", stream, total=1000, clock=lambda: next(moments))
    for done in (100, 200, 300, 1000):
        progress(done)
    progress.finish(1000)
    assert stream.getvalue().splitlines() == [
        "clear-expired: 200 of 1,000 removed (20%), 200/s",
        "clear-expired: 1,000 of 1,000 removed (100%), 500/s",
        "clear-expired: 1,000 removed in 2.5 s, 400/s",
    ]
    unknown = io.StringIO()
    times = iter([0.0, 2.0, 2.0])
    blind = ProgressLine("clear-expired", unknown, clock=lambda: next(times))
    blind(10)
    blind.finish(10)
    assert unknown.getvalue() == (
        "clear-expired: 10 removed, 5/s\nclear-expired: 10 removed in 2.0 s, 5/s\n"
    )


@pytest.mark.parametrize("store", ["sqlite", "cookie"])
async def test_on_a_terminal_progress_goes_to_stderr_and_the_count_to_stdout(
    store: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In-process twin of the pty test above (which runs in a child process). The cookie
    # store has no stats(), so no total is known: the lines show the count and rate only.
    url = f"sqlite:///{tmp_path / 's.sqlite3'}" if store == "sqlite" else "cookie://"
    if store == "sqlite":
        await seed(url, {"live": ({"n": 1}, 3600, None), "old": ({"n": 2}, -10, None)})
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    status, out, err = await run(capsys, "clear-expired", url)
    removed = 1 if store == "sqlite" else 0
    assert (status, out) == (0, f"{removed}\n")
    assert re.fullmatch(rf"clear-expired: {removed} removed in \d+\.\d s, [\d,]+/s\n", err)


# -- one family of ids: public ids and their prefixes, keys, whole cookies ---------------


async def test_show_finds_a_session_by_public_id_or_an_8_character_prefix(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    shown = set()
    for public_id in await public_ids(url, capsys):
        for given in (public_id, public_id[:8], public_id[:8].upper()):
            status, out, err = await run(capsys, "show", url, given, "--owner", "ann", "--json")
            assert (status, err) == (0, "")
            document = json.loads(out)
            assert document["public_id"] == public_id
            assert "session_key" not in document  # a public id never reveals the key
            shown.add(json.dumps(document["data"], sort_keys=True))
    assert shown == {'{"cart": [1, 2], "user": "ann"}', '{"n": 1}'}


async def test_show_accepts_a_whole_cookie_or_its_value(
    url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    signature = "x" * 43  # not checked: holding the cookie is holding the key
    for given in (
        f"live-key.{signature}",
        f"session=live-key.{signature}",
        f'"live-key.{signature}"',
        f"new-key~live-key.{signature}",  # a pending rotation: the new key, else the old
    ):
        status, out, err = await run(capsys, "show", url, given)
        assert (status, err) == (0, ""), given
        assert out.splitlines()[0] == "session_key  live-key"


async def test_a_public_id_without_owner_exits_1_saying_to_add_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    await seed(url, {"k": ({"n": 1}, 3600, "ann")})
    status, out, err = await run(capsys, "show", url, "9edd6b30")
    assert (status, out) == (1, "")
    assert "add --owner OWNER" in err and err.count("\n") == 1


@pytest.mark.parametrize("given", ["9edd6b30", "9edd6b", "zzzzzzzz"])
async def test_revoke_only_an_unknown_or_short_id_exits_1_with_one_line(
    given: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    await seed(url, {"k": ({"n": 1}, 3600, "ann")})
    for verb in (["revoke", url, "ann", "--only", given], ["revoke", url, "ann", "--keep", given]):
        status, out, err = await run(capsys, *verb)
        assert (status, out) == (1, "")
        assert err.startswith("error: ") and err.count("\n") == 1
    assert len(await public_ids(url, capsys)) == 1  # --keep of an unknown id ended nothing


async def test_a_prefix_that_matches_several_sessions_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from asgi_sessions.stores.base import OwnedSession
    from asgi_sessions.stores.memory import MemoryStore

    moment = datetime.now().astimezone()
    rows = [OwnedSession(f"9edd6b30{n:016x}", moment, moment, moment) for n in range(2)]

    async def two_alike(self: MemoryStore, owner: str) -> list[OwnedSession]:
        return rows

    monkeypatch.setattr(MemoryStore, "list_sessions", two_alike)
    for argv in (
        ["revoke", "memory://", "ann", "--only", "9edd6b30"],
        ["show", "memory://", "9edd6b30", "--owner", "ann"],
    ):
        status, out, err = await run(capsys, *argv)
        assert (status, out) == (1, "")
        assert "matches 2 sessions" in err and err.count("\n") == 1


# -- read-only verbs ------------------------------------------------------------------


def _journal_mode(path: Path) -> str:
    import sqlite3

    with closing(sqlite3.connect(path)) as conn:
        mode: str = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return mode


async def test_read_only_verbs_leave_an_sqlite_file_as_they_found_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    path = tmp_path / "s.sqlite3"
    url = f"sqlite:///{path}"
    await seed(url, {"live-key": ({"n": 1}, 3600, "ann")})
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")  # as a backup tool might leave it
    for argv in (["stats", url], ["show", url, "live-key"], ["sessions", url, "ann"]):
        status, _, err = await run(capsys, *argv)
        assert (status, err) == (0, ""), argv
        assert _journal_mode(path) == "delete", argv
        assert not Path(f"{path}-wal").exists(), argv


async def test_read_only_verbs_on_a_file_without_sessions_say_no_sessions_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlite3

    path = tmp_path / "other.sqlite3"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    before = path.read_bytes()
    for argv in (
        ["stats", f"sqlite:///{path}"],
        ["show", f"sqlite:///{path}", "k"],
        ["sessions", f"sqlite:///{path}", "ann"],
    ):
        status, out, err = await run(capsys, *argv)
        assert (status, out) == (1, ""), argv
        assert "no sessions table" in err and err.count("\n") == 1
    assert path.read_bytes() == before  # no schema created, no WAL switch
    assert _journal_mode(path) == "delete"


@pytest.mark.parametrize("verb", ["stats", "show", "sessions"])
async def test_read_only_verbs_on_a_missing_file_exit_1_and_create_nothing(
    verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "missing.sqlite3"
    argv = {"stats": [], "show": ["k"], "sessions": ["ann"]}[verb]
    status, out, err = await run(capsys, verb, f"sqlite:///{path}", *argv)
    assert (status, out) == (1, "")
    assert err.startswith("error: no SQLite database at") and err.count("\n") == 1
    assert not path.exists()


async def test_writers_still_write_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    await seed(url, {"k": ({"n": 1}, 3600, "ann"), "gone": ({"n": 1}, -10, None)})
    assert await run(capsys, "clear-expired", url) == (0, "1\n", "")
    assert await run(capsys, "revoke", url, "ann") == (0, "1\n", "")


async def test_stats_shows_import_markers_on_their_own_line_not_as_sessions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 's.sqlite3'}"
    # A marker as asgi_sessions.importers writes it: one key, "_imported".
    await seed(url, {"k": ({"n": 1}, 3600, None), "marker:": ({"_imported": True}, 3600, None)})
    status, out, _ = await run(capsys, "stats", url)
    rows = dict(line.split("  ", 1) for line in out.splitlines())
    assert status == 0
    assert rows["sessions"].strip() == "1"
    assert rows["import markers"].strip() == "1"

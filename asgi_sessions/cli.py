"""``python -m asgi_sessions``: look after a session store from a shell.

Like Django's ``clearsessions`` management command, plus a look at one session, at a
user's sessions and at the whole store. Every command takes a store URL
(``sqlite:///sessions.sqlite3``, ``redis://localhost:6379/0``,
``redis+cluster://10.0.0.1:6379``, ``redis+sentinel://10.0.0.1:26379/mymaster``,
``postgresql://user:password@host/db``, ...). Output is text for
people; ``--json`` gives one JSON document for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

from . import __version__
from ._progress import ProgressLine
from .errors import (
    DISTRIBUTION,
    ImproperlyConfigured,
    MissingDependency,
    SessionError,
    StoreCapabilityError,
)
from .stores import Store, store_from_url

__all__ = ["main"]


class _Failure(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


def _open(url: str) -> Store:
    store = store_from_url(url)
    # Looking at a file that is not there would silently create an empty database.
    path = getattr(store, "path", None)
    if url.lower().startswith("sqlite:") and path and not os.path.exists(path):
        raise _Failure(
            f"no SQLite database at {path!r}; check the URL (sqlite:///relative, "
            "sqlite:////absolute)."
        )
    return store


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _rows(pairs: Sequence[tuple[str, object]]) -> None:
    width = max(len(name) for name, _ in pairs)
    for name, value in pairs:
        print(f"{name:<{width}}  {value}")


async def _clear_expired(store: Store, args: argparse.Namespace) -> None:
    if not sys.stdout.isatty():
        # cron, a pipe, a log file: just the count, as Django's clearsessions is silent.
        print(await store.clear_expired())
        return
    total: int | None
    try:
        total = (await store.stats()).expired
    except StoreCapabilityError:
        total = None
    progress = ProgressLine("clear-expired", sys.stderr, total=total)
    removed = await store.clear_expired(progress=progress)
    progress.finish(removed)
    print(removed)


async def _show(store: Store, args: argparse.Namespace) -> None:
    record = await store.get(args.key)
    if record is None:
        raise _Failure(f"no live session with key {args.key!r} (unknown, deleted or expired).")
    data = record.get_decoded()
    if args.json:
        document = {
            "session_key": record.session_key,
            "owner": record.owner,
            "created": record.created.isoformat(),
            "expire_date": record.expire_date.isoformat(),
            "data": data,
        }
        print(json.dumps(document, indent=2, default=str))
        return
    _rows(
        [
            ("session_key", record.session_key),
            ("owner", record.owner if record.owner is not None else "(none)"),
            ("created", _when(record.created)),
            ("expire_date", _when(record.expire_date)),
            ("data", f"{len(data)} key{'' if len(data) == 1 else 's'}"),
        ]
    )
    for key, value in data.items():
        print(f"  {key} = {json.dumps(value, default=str, ensure_ascii=False)}")


async def _sessions(store: Store, args: argparse.Namespace) -> None:
    owned = await store.list_sessions(args.owner)
    if args.json:
        rows = [
            {
                "public_id": row.public_id,
                "created": row.created.isoformat(),
                "last_saved": row.last_saved.isoformat(),
                "expire_date": row.expire_date.isoformat(),
            }
            for row in owned
        ]
        print(json.dumps(rows, indent=2))
        return
    if not owned:
        print(f"{args.owner!r} has no live sessions.")
        return
    print(f"{'PUBLIC ID':<24}  {'CREATED':<23}  {'LAST SAVED':<23}  EXPIRES")
    for row in owned:
        print(
            f"{row.public_id:<24}  {_when(row.created)}  {_when(row.last_saved)}  "
            f"{_when(row.expire_date)}"
        )


async def _revoke(store: Store, args: argparse.Namespace) -> None:
    if args.only is not None:
        print(await store.revoke(args.owner, args.only))
    else:
        print(await store.revoke_all(args.owner, keep=args.keep))


async def _stats(store: Store, args: argparse.Namespace) -> None:
    stats = await store.stats()
    size = _size(stats.size_bytes)
    if args.json:
        print(
            json.dumps(
                {
                    "sessions": stats.sessions,
                    "expired": stats.expired,
                    "owners": stats.owners,
                    "size_bytes": stats.size_bytes,
                    "size_where": stats.size_where,
                },
                indent=2,
            )
        )
        return
    _rows(
        [
            ("sessions", f"{stats.sessions:,}"),
            ("expired", f"{stats.expired:,}{' (not cleared yet)' if stats.expired else ''}"),
            ("owners", f"{stats.owners:,}"),
            ("size on disk" if stats.size_where == "disk" else "size in memory", size),
        ]
    )


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 1000 or unit == "TB":
            break
    return f"{value:.1f} {unit} ({size:,} bytes)"


Command = Callable[[Store, argparse.Namespace], Awaitable[None]]


def _program_name() -> str:
    # The console script and `python -m` reach the same main(); usage shows how it was run.
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if invoked in ("", "__main__.py", "-m", "-c"):
        return "python -m asgi_sessions"
    return invoked


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="Inspect and clean a session store. URL examples: memory://, "
        "sqlite:///sessions.sqlite3 (relative), sqlite:////var/lib/app/sessions.sqlite3 "
        "(absolute), redis://localhost:6379/0, redis+cluster://host:port (any node of a "
        "Redis Cluster), redis+sentinel://host:port[,host:port]/service[/db], "
        "postgresql://user:password@localhost/app.",
    )
    parser.add_argument("--version", action="version", version=f"{DISTRIBUTION} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, run: Command, help: str, *, json_help: str | None = None
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("url", metavar="URL", help="the session store's URL")
        if json_help is not None:
            sub.add_argument("--json", action="store_true", help=json_help)
        sub.set_defaults(run=run)
        return sub

    command(
        "clear-expired",
        _clear_expired,
        "Delete expired sessions and print how many were removed (run it from cron). On "
        "a terminal, progress (count and rate) goes to stderr as it runs.",
    )
    show = command(
        "show",
        _show,
        "Print one session: key, owner, creation and expiry (UTC), and its data.",
        json_help="print one JSON object: session_key, owner, created, expire_date "
        "(ISO 8601, UTC) and data",
    )
    show.add_argument(
        "key", metavar="KEY", help="the session key (the cookie's value before the dot)"
    )
    sessions = command(
        "sessions",
        _sessions,
        "List an owner's live sessions, oldest first. Pass a public id to `revoke --only` "
        "to end that session.",
        json_help="print a JSON array of {public_id, created, last_saved, expire_date} "
        "(ISO 8601, UTC)",
    )
    sessions.add_argument(
        "owner", metavar="OWNER", help="the owner (user id) sessions are bound to"
    )
    revoke = command(
        "revoke",
        _revoke,
        "End an owner's sessions (all, all but --keep, or just --only) and print how many.",
    )
    revoke.add_argument("owner", metavar="OWNER", help="the owner (user id)")
    which = revoke.add_mutually_exclusive_group()
    which.add_argument("--keep", metavar="PUBLIC_ID", help="leave this session alone")
    which.add_argument("--only", metavar="PUBLIC_ID", help="end only this session")
    command(
        "stats",
        _stats,
        "Print how many sessions are live, how many expired ones are not cleared yet, how "
        "many owners have sessions, and the store's size on disk or in memory.",
        json_help="print one JSON object: sessions, expired, owners, size_bytes, "
        "size_where ('disk' or 'memory')",
    )
    return parser


async def _run(args: argparse.Namespace) -> None:
    store = _open(args.url)
    async with store:
        await args.run(store, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0, or 1 after a one-line error)."""
    args = _parser().parse_args(argv)
    try:
        asyncio.run(_run(args))
    except (_Failure, ImproperlyConfigured, MissingDependency, SessionError, OSError) as exc:
        # One line, no traceback: the message already says what to fix.
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return 1
    return 0

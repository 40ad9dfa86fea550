"""``python -m asgi_sessions``: look after a session store from a shell.

Like Django's ``clearsessions`` management command, plus a look at one session and at a
user's sessions. Every command takes a store URL (``sqlite:///sessions.sqlite3``,
``redis://localhost:6379/0``, ``postgresql://user:password@host/db``, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .errors import ImproperlyConfigured, MissingDependency, SessionError
from .stores import Store, store_from_url

__all__ = ["main"]

_SESSIONS_HELP = """\
Print the owner's live sessions, oldest first, one JSON object per line:
{"public_id": ..., "created": ..., "last_saved": ..., "expire_date": ...}
(times in ISO 8601, UTC). Pass a public_id to `revoke --only` to end that session."""


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


async def _clear_expired(store: Store, args: argparse.Namespace) -> None:
    print(await store.clear_expired())


async def _show(store: Store, args: argparse.Namespace) -> None:
    record = await store.get(args.key)
    if record is None:
        raise _Failure(f"no live session with key {args.key!r} (unknown, deleted or expired).")
    document = {
        "session_key": record.session_key,
        "expire_date": record.expire_date.isoformat(),
        "data": record.get_decoded(),
    }
    print(json.dumps(document, indent=2, default=str))


async def _sessions(store: Store, args: argparse.Namespace) -> None:
    for owned in await store.list_sessions(args.owner):
        print(
            json.dumps(
                {
                    "public_id": owned.public_id,
                    "created": owned.created.isoformat(),
                    "last_saved": owned.last_saved.isoformat(),
                    "expire_date": owned.expire_date.isoformat(),
                }
            )
        )


async def _revoke(store: Store, args: argparse.Namespace) -> None:
    if args.only is not None:
        print(await store.revoke(args.owner, args.only))
    else:
        print(await store.revoke_all(args.owner, keep=args.keep))


Command = Callable[[Store, argparse.Namespace], Awaitable[None]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asgi_sessions",
        description="Inspect and clean a session store. URL examples: memory://, "
        "sqlite:///sessions.sqlite3 (relative), sqlite:////var/lib/app/sessions.sqlite3 "
        "(absolute), redis://localhost:6379/0, postgresql://user:password@localhost/app.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Command, help: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=kwargs.pop("description", help))
        sub.add_argument("url", metavar="URL", help="the session store's URL")
        sub.set_defaults(run=run)
        return sub

    command(
        "clear-expired",
        _clear_expired,
        "Delete expired sessions and print how many were removed (run it from cron).",
    )
    show = command(
        "show",
        _show,
        "Print one session as JSON: session_key, expire_date (ISO 8601, UTC) and data.",
    )
    show.add_argument(
        "key", metavar="KEY", help="the session key (the cookie's value before the dot)"
    )
    sessions = command(
        "sessions",
        _sessions,
        "List an owner's live sessions as JSON lines.",
        description=_SESSIONS_HELP,
    )
    sessions.formatter_class = argparse.RawDescriptionHelpFormatter
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

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
import importlib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ._progress import ProgressLine
from ._version import __version__
from .cookies import split_pending
from .errors import (
    DISTRIBUTION,
    ImproperlyConfigured,
    MissingDependency,
    SessionError,
    StoreCapabilityError,
)
from .events import SessionEvents
from .serializers import JSONSerializer
from .stores import Store, store_from_url
from .stores.base import OwnedSession, SessionRecord, StoredSession

# A public id is 24 hex digits; a prefix names a session from this many on (the demo
# shows the first 8).
_PUBLIC_ID_LENGTH = 24
_MIN_PREFIX = 8

__all__ = ["main"]


class _Failure(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


def _open(url: str, *, read_only: bool) -> Store:
    sqlite = url.lower().startswith("sqlite:")
    # Looking at an SQLite file opens it read-only: no schema created, no switch to WAL.
    store = store_from_url(url, read_only=True) if sqlite and read_only else store_from_url(url)
    # Looking at a file that is not there would silently create an empty database.
    path = getattr(store, "path", None)
    if sqlite and path and not os.path.exists(path):
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


def _looks_public(text: str) -> bool:
    """A public id (24 hex digits) or a prefix of one; session keys are base64url."""
    return 0 < len(text) <= _PUBLIC_ID_LENGTH and all(c in "0123456789abcdef" for c in text)


def _keys_in(text: str) -> list[str]:
    """The session keys a pasted key or cookie may hold, most likely first.

    Accepts a raw key, a cookie value (``KEY.SIGNATURE``), a pending-rotation value
    (``NEW~OLD.SIGNATURE``) or a whole ``name=value`` pair. The signature is not checked:
    whoever holds the cookie holds the key, and the store's lookup is the test that counts.
    """
    text = text.strip().strip('"')
    _name, equals, value = text.partition("=")
    # "session=KEY.SIG": keys and signatures are base64url, which has no "=".
    value = value.strip('"') if equals and value else text
    keys: list[str] = []
    payload, dot, _signature = value.rpartition(".")
    if dot and payload:
        new_key, old_key = split_pending(payload)
        keys += [new_key] if old_key is None else [new_key, old_key]
    keys += [value, text]
    return list(dict.fromkeys(keys))


async def _resolve(store: Store, owner: str, prefix: str) -> OwnedSession:
    """The owner's one live session whose public id starts with ``prefix``."""
    prefix = prefix.strip().lower()
    if not _looks_public(prefix) or len(prefix) < _MIN_PREFIX:
        raise _Failure(
            f"{prefix!r} is not a public id: give the 24 hex digits `sessions URL {owner}` "
            f"prints, or at least their first {_MIN_PREFIX}."
        )
    found = [row for row in await store.list_sessions(owner) if row.public_id.startswith(prefix)]
    if not found:
        raise _Failure(
            f"{owner!r} has no live session whose public id starts with {prefix!r} "
            f"(`sessions URL {owner}` lists them)."
        )
    if len(found) > 1:
        ids = ", ".join(row.public_id for row in found)
        raise _Failure(
            f"{prefix!r} matches {len(found)} sessions of {owner!r} ({ids}); give more of it."
        )
    return found[0]


async def _by_public_id(store: Store, owner: str, prefix: str) -> tuple[str, StoredSession]:
    """Find a session by its public id (or a prefix of it) among the owner's."""
    store_ids: dict[str, str] = {}
    owned = store.owned

    def remembering(store_id: str, *figures: Any) -> OwnedSession:
        row = owned(store_id, *figures)
        store_ids[row.public_id] = store_id
        return row

    # Every backend builds its listing with Store.owned(store_id, ...); listing through
    # it here learns the store id behind each public id without a new store hook.
    setattr(store, "owned", remembering)  # noqa: B010 - shadows the static helper
    try:
        row = await _resolve(store, owner, prefix)
    finally:
        delattr(store, "owned")
    stored = await store.read(store_ids[row.public_id])
    if stored is None:
        raise _Failure(f"session {row.public_id} of {owner!r} ended just now.")
    return row.public_id, stored


async def _show(store: Store, args: argparse.Namespace) -> None:
    public_id: str | None = None
    session_key: str | None = None
    if _looks_public(args.id.strip().lower()):
        if args.owner is None:
            raise _Failure(
                f"{args.id!r} looks like a public id; public ids are listed per owner, so "
                "add --owner OWNER (the owner `sessions URL OWNER` was run for)."
            )
        public_id, stored = await _by_public_id(store, args.owner, args.id)
    else:
        candidates = _keys_in(args.id)
        for key in candidates:
            found = await store.load(key)
            if found is not None:
                session_key, stored = key, found
                break
        else:
            hint = " (read as a cookie: the key before the dot)" if len(candidates) > 1 else ""
            raise _Failure(
                f"no live session with key {args.id!r}{hint} (unknown, deleted or expired)."
            )
    record = SessionRecord(
        session_key=session_key or "",
        expire_date=datetime.fromtimestamp(stored.expires_at, UTC),
        created=datetime.fromtimestamp(stored.created_at, UTC),
        owner=stored.owner,
        _data=stored.data
        if stored.decoded is None
        else {k: json.dumps(v) for k, v in stored.decoded.items()},
        _serializer=JSONSerializer(),
    )
    data = record.get_decoded()
    # The public id names the session without being usable as a cookie.
    which: tuple[str, str] = (
        ("public_id", public_id) if public_id is not None else ("session_key", record.session_key)
    )
    if args.json:
        document = {
            which[0]: which[1],
            "owner": record.owner,
            "created": record.created.isoformat(),
            "expire_date": record.expire_date.isoformat(),
            "data": data,
        }
        print(json.dumps(document, indent=2, default=str))
        return
    _rows(
        [
            which,
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
                "device": row.label,
                "user_agent": row.user_agent,
                "ip": row.ip,
                "created": row.created.isoformat(),
                "last_seen": row.last_seen.isoformat(),
                "expire_date": row.expire_date.isoformat(),
            }
            for row in owned
        ]
        print(json.dumps(rows, indent=2))
        return
    if not owned:
        print(f"{args.owner!r} has no live sessions.")
        return
    print(
        f"{'PUBLIC ID':<24}  {'DEVICE':<24}  {'IP':<18}  {'CREATED':<23}  "
        f"{'LAST SEEN':<23}  EXPIRES"
    )
    for row in owned:
        print(
            f"{row.public_id:<24}  {_fit(row.label, 24)}  {_fit(row.ip or '-', 18)}  "
            f"{_when(row.created)}  {_when(row.last_seen)}  {_when(row.expire_date)}"
        )


def _fit(text: str, width: int) -> str:
    """``text`` in a column of ``width`` characters: padded, cut with an ellipsis if
    longer, and printable (a stored user agent is the client's text)."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text.ljust(width) if len(text) <= width else text[: width - 1] + "…"


async def _revoke(store: Store, args: argparse.Namespace) -> None:
    if args.only is not None:
        public_id = (await _resolve(store, args.owner, args.only)).public_id
        if not await store.revoke(args.owner, public_id):
            raise _Failure(f"session {public_id} of {args.owner!r} ended just now.")
        print(1)
        return
    keep = None if args.keep is None else (await _resolve(store, args.owner, args.keep)).public_id
    print(await store.revoke_all(args.owner, keep=keep))


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
                    "import_markers": stats.markers,
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
        # Records an importer keeps so an old cookie imports once: not sessions.
        + ([("import markers", f"{stats.markers:,}")] if stats.markers else [])
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
# Commands that only look: they open an SQLite file read-only.
_READERS = frozenset({"show", "sessions", "stats"})


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

    clear = command(
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
        "id",
        metavar="ID",
        help="a public id as `sessions` prints it, or its first 8 or more characters (with "
        "--owner); or a session key, or a whole cookie (`name=KEY.SIGNATURE` or its value)",
    )
    show.add_argument(
        "--owner", metavar="OWNER", help="the owner whose sessions a public id is looked up in"
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
    which.add_argument(
        "--keep",
        metavar="PUBLIC_ID",
        help="leave this session alone (an id or 8+ of its first characters)",
    )
    which.add_argument(
        "--only",
        metavar="PUBLIC_ID",
        help="end only this session (an id or 8+ of its first characters)",
    )
    for sub in (clear, revoke):
        sub.add_argument(
            "--events",
            metavar="MODULE:OBJ",
            help="the app's SessionEvents (e.g. myapp.sessions:events): fire its revoked / "
            "expired handlers, as the app's own revocations and purges do",
        )
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
    store = _open(args.url, read_only=args.command in _READERS)
    if getattr(args, "events", None):
        store.events = _load_events(args.events)
    async with store:
        await args.run(store, args)


def _load_events(spec: str) -> SessionEvents:
    """Import ``module:obj`` (from the working directory too, as uvicorn does)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise _Failure(f"--events takes MODULE:OBJ, such as myapp.sessions:events, not {spec!r}.")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: object = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise _Failure(f"--events {spec!r} cannot be imported: {exc}.") from exc
    if not isinstance(found, SessionEvents):
        raise _Failure(
            f"--events {spec!r} is {found!r}, not a SessionEvents(on_revoked=..., ...) object."
        )
    return found


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

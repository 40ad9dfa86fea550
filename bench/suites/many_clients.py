"""Many sessions at once: N concurrent clients through uvicorn, each counting writes in its
own session on its own connection; afterwards every session must count every write its
client saw succeed. Writes/s, errors (any non-200 or transport error) and lost writes.
"""

from __future__ import annotations

import argparse

from ..harness import Context, Section, sized, table
from ..served import Result, run_writers
from ..services import REDIS, Unavailable

TITLE = "Many clients through uvicorn"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stores", default="sqlite,redis", help="comma-separated")
    parser.add_argument("--clients", type=int, default=200)
    sized(parser, seconds=(10.0, 2.0, "seconds of load"))


def serve_and_drive(store_url: str, clients: int, seconds: float) -> Result:
    """Serve the app with its sessions at ``store_url`` and drive it."""
    return run_writers(store_url, hosts=["127.0.0.1"], users=clients, writers=1, seconds=seconds)


def run(ctx: Context, args: argparse.Namespace) -> Section:
    seconds = args.seconds
    rows, data = [], {}
    for store in args.stores.split(","):
        try:
            url = f"sqlite:///{ctx.tmpdir / 'many.sqlite3'}"
            url = ctx.services.url(REDIS) if store == "redis" else url
        except Unavailable as exc:
            rows.append([store, f"skipped: {exc}", "", "", ""])
            continue
        r = serve_and_drive(url, args.clients, seconds)
        data[store] = {"per_second": r.per_second, "errors": r.errors, "lost": r.lost_writes}
        rows.append([store, f"{r.writes:,}", f"{r.per_second:,.0f}", len(r.errors), r.lost_writes])
        rows += [["", error, "", "", ""] for error in r.errors[:3]]
    lines = [
        f"{args.clients} clients x {seconds:g} s, each with its own session and connection.",
        "",
        *table(["store", "writes:", "writes/s:", "errors:", "lost writes:"], rows),
        "",
        "Goal: 0 errors and 0 lost writes.",
    ]
    return Section(TITLE, lines, data)

"""Which PostgreSQL layout for PostgresStore: one row per key, or one jsonb per session?
Raw asyncpg, no asgi_sessions code (``bench/pg_layouts.py``, measured by
``bench/pg_layout_figures.py``): latency with the statement
cache on and off, WAL bytes per save, 64 concurrent writers, merge semantics under races,
and HOT updates by purge index. The decision and a full run: ``bench/postgres_layout.md``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import asyncpg

from .. import pg_layout_figures as figures
from ..harness import Context, Section, log
from ..pg import POSTGRES, POSTGRES_DURABLE, scratch_schema, server_setting
from ..pg_layouts import SCHEMA

TITLE = "PostgresStore layout: one row per key against one jsonb per session"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--durable", action="store_true", help="fsync and synchronous_commit on")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (11; quick 3)")
    parser.add_argument("--ops", type=int, help="calls per round (200; quick 30)")
    parser.add_argument(
        "--saves", type=int, help="saves per writer, per WAL figure (100; quick 10)"
    )
    parser.add_argument("--trials", type=int, help="race trials per layout (50; quick 5)")
    parser.add_argument(
        "--sessions", type=int, help="sessions of the HOT figure (1,000; quick 100)"
    )


async def measure(dsn: str, a: dict[str, int]) -> dict[str, Any]:
    async with scratch_schema(dsn, "layout") as scratch:
        conn = await asyncpg.connect(scratch)
        await conn.execute(SCHEMA)
        await conn.close()
        out: dict[str, Any] = {}
        for cache in (100, 0):
            log(f"  latency, statement_cache_size={cache}")
            out[f"latency_cache_{cache}"] = await figures.latency(
                scratch, cache, a["rounds"], a["ops"]
            )
        log("  WAL, concurrency, semantics, HOT")
        out["wal_bytes"] = await figures.wal(scratch, 2 * a["saves"])
        out["concurrency"] = await figures.concurrency(scratch, a["saves"])
        out["semantics"] = await figures.semantics(scratch, a["trials"])
        out["hot"] = await figures.hot(scratch, a["sessions"])
    return out


def report(m: dict[str, Any], a: dict[str, int]) -> list[str]:
    lines = []
    for cache in (100, 0):
        lines += [
            "",
            f"### One connection, statement_cache_size={cache} (medians of {a['rounds']} "
            f"interleaved rounds x {a['ops']} calls)",
            "",
            "| operation | wall us | CPU us |",
            "|---|---:|---:|",
            *(
                f"| {name} | {wall * 1e6:,.1f} | {cpu * 1e6:,.1f} |"
                for name, (wall, cpu) in m[f"latency_cache_{cache}"].items()
            ),
        ]
    lines += ["", f"### WAL bytes per one-key save (mean of {2 * a['saves']})", ""]
    lines += ["| layout, session | bytes |", "|---|---:|"]
    lines += [f"| {name} | {b:,.0f} |" for name, b in m["wal_bytes"].items()]
    lines += ["", f"### 64 concurrent writers x {a['saves']} saves, pool of 16, no statement cache"]
    lines += [
        "",
        "| layout, writing | saves/s | errors | lost per-key writes |",
        "|---|---:|---|---:|",
    ]
    for name, r in m["concurrency"].items():
        errors = ", ".join(f"{n} {e}" for e, n in r["errors"].items()) or "0"
        lines.append(f"| {name} | {r['saves_per_s']:,.0f} | {errors} | {r['lost']} |")
    lines += ["", f"### Merge semantics under races ({a['trials']} trials each)", ""]
    lines += [
        "| layout | resurrected after delete | wrong emptiness (pop won the race) "
        "| clear() + re-add gives |",
        "|---|---:|---:|---|",
    ]
    for name, r in m["semantics"].items():
        lines.append(
            f"| {name} | {r['resurrected']} | {r['wrong_emptiness']} ({r['pop_won']}) "
            f"| `{r['clear_readd']}` |"
        )
    lines += ["", f"### HOT updates after 5 one-key saves on each of {a['sessions']:,} sessions"]
    lines += ["", "| purge index, layout | table: HOT / updates, size |", "|---|---|"]
    for name, tables in m["hot"].items():
        parts = [f"{t}: {r['hot']}/{r['updates']}, {r['kib']:,} KiB" for t, r in tables.items()]
        lines.append(f"| {name} | {'; '.join(parts)} |")
    return lines


def run(ctx: Context, args: argparse.Namespace) -> Section:
    def pick(given: int | None, full: int, quick: int) -> int:
        return given if given is not None else (quick if ctx.quick else full)

    a = {
        "rounds": pick(args.rounds, 11, 3),
        "ops": pick(args.ops, 200, 30),
        "saves": pick(args.saves, 100, 10),
        "trials": pick(args.trials, 50, 5),
        "sessions": pick(args.sessions, 1000, 100),
    }
    dsn = ctx.services.url(POSTGRES_DURABLE if args.durable else POSTGRES)
    version, fsync = (server_setting(dsn, name) for name in ("server_version", "fsync"))
    m = asyncio.run(measure(dsn, a))
    lines = [f"PostgreSQL {version}, fsync {fsync}, loopback TCP; raw asyncpg.", *report(m, a)]
    return Section(TITLE, lines, {"server": {"version": version, "fsync": fsync}, **a, **m})

"""PostgresStore against raw asyncpg (a load against a SELECT by primary key, a save of one
key against SELECT + upsert, 100 KB against 1 KB), 64 concurrent writers, a load among
1,000,000 sessions against among 1,000, ``clear_expired`` of 1,000,000 beside live saves,
and four uvicorn processes writing the same sessions at once.

On the run's PostgreSQL server (fsync off; ``--durable``: a server with fsync and
synchronous_commit on, as in production), in a scratch schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from .. import pg_figures as figures
from .. import pg_processes
from ..harness import Context, Section, log
from ..pg import POSTGRES, POSTGRES_DURABLE, scratch_schema, server_setting
from ..stats import percentile

TITLE = "PostgresStore"
FIGURES = ("latency", "concurrency", "scale", "purge", "processes")
GOALS = (  # (label, ours, against, at most this many times)
    ("load / raw SELECT", figures.LOAD, figures.SELECT, 1.2),
    ("save 1 key / (raw SELECT + upsert)", figures.SAVE, figures.UPSERT, 1.3),
    ("save 1 key, 100 KB / 1 KB session", figures.SAVE_100K, figures.SAVE, 1.5),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", help=f"comma-separated, of {', '.join(FIGURES)} (all)")
    parser.add_argument("--durable", action="store_true", help="fsync and synchronous_commit on")
    parser.add_argument(
        "--sessions", type=int, help="stored sessions for scale and purge (1,000,000; quick 10,000)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (11; quick 3)")
    parser.add_argument("--ops", type=int, help="calls per round (200; quick 50)")
    parser.add_argument("--saves", type=int, help="saves per concurrent writer (100; quick 20)")
    parser.add_argument("--processes", type=int, default=4, help="uvicorn processes (4)")
    parser.add_argument("--clients", type=int, help="sessions written from them (16; quick 4)")
    parser.add_argument("--writers", type=int, help="concurrent writers per session (8; quick 4)")
    parser.add_argument("--seconds", type=float, help="of writing (10; quick 2)")


def _settings(args: argparse.Namespace, quick: bool) -> dict[str, Any]:
    def pick(given: Any, full: Any, short: Any) -> Any:
        return given if given is not None else (short if quick else full)

    return {
        "sessions": pick(args.sessions, 1_000_000, 10_000),
        "rounds": pick(args.rounds, 11, 3),
        "ops": pick(args.ops, 200, 50),
        "saves": pick(args.saves, 100, 20),
        "processes": args.processes,
        "clients": pick(args.clients, 16, 4),
        "writers": pick(args.writers, 8, 4),
        "seconds": pick(args.seconds, 10.0, 2.0),
    }


async def measure(dsn: str, chosen: list[str], s: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with scratch_schema(dsn, "postgres") as scratch:
        for name in chosen:
            log(f"  {name}")
            if name == "latency":
                out[name] = await figures.against_raw(scratch, s["rounds"], s["ops"])
            elif name == "concurrency":
                out[name] = await figures.concurrency(scratch, s["saves"])
            elif name == "scale":
                out[name] = await figures.scale(scratch, s["sessions"], s["rounds"], s["ops"])
            elif name == "purge":
                out[name] = await figures.purge(scratch, s["sessions"])
            else:  # uvicorn processes, driven from a thread with its own event loop
                result = await asyncio.to_thread(
                    pg_processes.run, scratch, processes=s["processes"], clients=s["clients"],
                    writers=s["writers"], seconds=s["seconds"],
                )  # fmt: skip
                out[name] = vars(result) | {"per_second": result.per_second}
    return out


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f}"


def latency_lines(m: dict[str, tuple[float, float]], s: dict[str, Any]) -> list[str]:
    lines = [
        f"### Against raw asyncpg, one connection ({s['rounds']} interleaved rounds x "
        f"{s['ops']} calls; medians)",
        "",
        "| operation | wall us | CPU us |",
        "|---|---:|---:|",
        *(f"| {name} | {_us(wall)} | {_us(cpu)} |" for name, (wall, cpu) in m.items()),
        "",
        "| ratio | wall | CPU | goal |",
        "|---|---:|---:|---|",
    ]
    for label, ours, against, goal in GOALS:
        wall = m[ours][0] / m[against][0]
        verdict = "PASS" if wall <= goal else "**MISS**"
        cpu = m[ours][1] / m[against][1]
        lines.append(f"| {label} | {wall:.2f}x | {cpu:.2f}x | ≤ {goal}x wall: {verdict} |")
    return lines


def concurrency_lines(c: dict[str, dict[str, Any]], s: dict[str, Any]) -> list[str]:
    lines = [
        f"### 64 concurrent writers x {s['saves']} saves (pool of 16 connections)",
        "",
        "| writing | saves/s | errors | lost writes (goal 0) |",
        "|---|---:|---|---:|",
    ]
    for label, r in c.items():
        errors = ", ".join(f"{n} {name}" for name, n in r["errors"].items()) or "0"
        lines.append(f"| {label} | {r['saves_per_s']:,.0f} | {errors} | {r['lost']} |")
    return lines


def scale_lines(sc: dict[str, Any], rows: int) -> list[str]:
    (a, a_cpu), (b, b_cpu) = sc["loads"].values()
    return [
        f"### A load among {rows:,} sessions against among 1,000",
        "",
        f"Each load picks a random stored key (at 1,000,000 most pages are outside "
        f"shared_buffers). Filling "
        f"both tables by SQL (3 keys per session): {sc['fill_s']:.0f} s.",
        "",
        "| load | wall us | CPU us |",
        "|---|---:|---:|",
        f"| among {rows:,} | {_us(a)} | {_us(a_cpu)} |",
        f"| among 1,000 | {_us(b)} | {_us(b_cpu)} |",
        f"| ratio | {a / b:.2f}x | {a_cpu / b_cpu:.2f}x |",
    ]


def purge_lines(p: dict[str, Any]) -> list[str]:
    server = sorted(b[0] for b in p["batches"])
    seen = sorted(b[2] for b in p["batches"])
    sizes = [b[1] for b in p["batches"]]
    slowest = sorted(p["batches"])[-3:]
    saves = p["saves_s"]
    return [
        f"### clear_expired of {p['removed']:,} expired sessions, 16 writers saving live ones",
        "",
        "| figure | value |",
        "|---|---|",
        f"| removed | {p['removed']:,} in {p['seconds']:.1f} s "
        f"({p['removed'] / p['seconds']:,.0f}/s), {len(server)} batches (sized to take "
        f"~{p['target_batch_s'] * 1e3:.0f} ms each) |",
        f"| one batch = one transaction, server's clock (the longest its locks are held) | "
        f"median {statistics.median(server) * 1e3:.1f} ms, p99 {percentile(server, 99) * 1e3:.1f}"
        f" ms, max {server[-1] * 1e3:.1f} ms (goal: no lock > 50 ms) |",
        f"| one batch as this process saw it | median {statistics.median(seen) * 1e3:.1f} ms, "
        f"max {seen[-1] * 1e3:.1f} ms |",
        f"| batch sizes | median {statistics.median(sizes):.0f}, max {max(sizes)}; slowest: "
        + ", ".join(f"{t * 1e3:.0f} ms for {n}" for t, n, _ in slowest)
        + " |",
        f"| saves beside it | {len(saves):,}: median {statistics.median(saves) * 1e3:.1f} ms, "
        f"max {saves[-1] * 1e3:.1f} ms |",
    ]


def processes_lines(r: dict[str, Any], s: dict[str, Any]) -> list[str]:
    return [
        f"### {s['processes']} uvicorn processes, {s['clients']} sessions x {s['writers']} "
        f"concurrent writers, {s['seconds']:g} s",
        "",
        "| writes | from processes | errors | lost writes (goal 0) | idle writers |",
        "|---:|---:|---:|---:|---:|",
        f"| {r['writes']:,} ({r['per_second']:,.0f}/s) | {len(r['pids'])} | {len(r['errors'])} "
        f"| {r['lost_writes']} | {r['idle_writers']} |",
        *(["", *(f"- {error}" for error in r["errors"][:5])] if r["errors"] else []),
    ]


def run(ctx: Context, args: argparse.Namespace) -> Section:
    chosen = args.only.split(",") if args.only else list(FIGURES)
    unknown = set(chosen) - set(FIGURES)
    if unknown:
        raise SystemExit(f"--only: no figure {', '.join(sorted(unknown))}; known: {FIGURES}")
    s = _settings(args, ctx.quick)
    dsn = ctx.services.url(POSTGRES_DURABLE if args.durable else POSTGRES)
    version, fsync = (server_setting(dsn, name) for name in ("server_version", "fsync"))
    m = asyncio.run(measure(dsn, chosen, s))
    lines = [f"PostgreSQL {version}, fsync {fsync}, loopback TCP."]
    if "latency" in m:
        lines += ["", *latency_lines(m["latency"], s)]
    if "concurrency" in m:
        lines += ["", *concurrency_lines(m["concurrency"], s)]
    if "scale" in m:
        lines += ["", *scale_lines(m["scale"], s["sessions"])]
    if "purge" in m:
        lines += ["", *purge_lines(m["purge"])]
    if "processes" in m:
        lines += ["", *processes_lines(m["processes"], s)]
    data = {"server": {"version": version, "fsync": fsync}, "settings": s, **m}
    return Section(TITLE, lines, data)

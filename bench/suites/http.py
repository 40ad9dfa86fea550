"""The same apps under uvicorn (one worker each, started up front), loaded round by round
by a raw-socket asyncio client with ``--concurrency`` keep-alive connections; requests/s.
"""

from __future__ import annotations

import argparse

from ..apps import ENDPOINTS
from ..harness import Context, Section, sized, table
from ..served import load_configs
from ..services import REDIS, Unavailable
from ..stats import Case, Goal, fmt, ratio_rows, ratio_table

TITLE = "Under uvicorn (1 worker): requests/s [p10-p90 of rounds]"
CONFIGS = ["bare", "starlette", "starsessions-redis", "raw-redis", "raw-sqlite"]
CONFIGS += ["ours-memory", "ours-redis", "ours-sqlite"]
# Throughput: ours at least this fraction of the floor's requests/s.
CASES = [
    Case("Redis read", "read", "raw-redis", "ours-redis", (Goal(0.95),), ("starsessions-redis",)),
    Case("Redis write", "write", "raw-redis", "ours-redis", (), ("starsessions-redis",)),
    Case("untouched", "untouched", "bare", "ours-redis", (), ("starlette",)),
    Case("memory read", "read", "bare", "ours-memory", (), ("starlette",)),
    Case("SQLite read", "read", "raw-sqlite", "ours-sqlite"),
    Case("SQLite write", "write", "raw-sqlite", "ours-sqlite"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sized(parser, seconds=(2.0, 0.5, "seconds per cell per round"), rounds=(3, 1, "rounds"))
    parser.add_argument("--concurrency", type=int, default=32, help="connections (32)")


def run(ctx: Context, args: argparse.Namespace) -> Section:
    names, skipped = list(CONFIGS), {}
    try:
        redis_url = ctx.services.url(REDIS)
    except Unavailable as exc:
        redis_url, skipped = "", {n: str(exc) for n in names if "redis" in n}
        names = [n for n in names if n not in skipped]
    size = {"seconds": args.seconds, "rounds": args.rounds, "clients": args.concurrency}
    cells, _ = load_configs(names, ENDPOINTS, ctx.tmpdir, workers=1, redis_url=redis_url, **size)
    rps: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    for name, by_endpoint in cells.items():
        for endpoint, loaded in by_endpoint.items():
            rps[name][endpoint] = [c.per_second for c in loaded]
            if failed := [c.samples for c in loaded if c.errors]:
                raise RuntimeError(f"{name} /{endpoint} did not answer 200: {failed[0]}")
    rows = ratio_rows(rps, CASES, higher_is_better=True)
    head = ["configuration", *(f"{e} req/s:" for e in ENDPOINTS)]
    lines = [
        f"{args.concurrency} keep-alive connections, {args.rounds} rounds x {args.seconds} s per "
        "cell; uvicorn with httptools.",
        "",
        *table(head, ([f"`{n}`", *(fmt(rps[n][e], digits=0) for e in ENDPOINTS)] for n in names)),
        "",
        "Throughput ratios (higher is better):",
        "",
        *ratio_table(rows),
    ]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in skipped.items())]
    return Section(TITLE, lines, {**size, "rps": rps, "ratios": rows, "skipped": skipped})

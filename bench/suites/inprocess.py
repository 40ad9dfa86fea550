"""Every configuration called in-process through ASGI, interleaved round by round: median
microseconds per request, ratios against the floors (with the goals), a write-size sweep,
and the ratio chart.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from ..apps import CONFIGS, ENDPOINTS, SWEEP, SWEEP_SIZES, Built, Config, Env, Skip, build
from ..asgi import call, timed
from ..harness import Context, Section, log
from ..services import REDIS, Unavailable
from ..stats import Case, Goal, fmt, ratio_rows

TITLE = "In-process (ASGI called directly), median us per request [p10-p90 of round medians]"

# Issue 16's cases: ours against the floor, the peers beside it.
CASES = [
    Case(
        "untouched, memory",
        "untouched",
        "bare",
        "ours-memory",
        (Goal(1.15),),
        (
            "ours-memory-autoload",
            "starlette",
            "starsessions-memory",
            "starsessions-memory-autoload",
        ),
    ),
    Case("untouched, SQLite", "untouched", "bare", "ours-sqlite", (Goal(1.15),)),
    Case(
        "untouched, Redis",
        "untouched",
        "bare",
        "ours-redis",
        (Goal(1.15),),
        ("starsessions-redis",),
    ),
    Case("untouched, cookie", "untouched", "bare", "ours-cookie", (Goal(1.15),)),
    Case(
        "memory read",
        "read",
        "bare",
        "ours-memory",
        (Goal(1.8),),
        ("ours-memory-autoload", "starsessions-memory", "starsessions-memory-autoload"),
    ),
    Case("memory write", "write", "bare", "ours-memory", (Goal(2.5),), ("starsessions-memory",)),
    Case("cookie read", "read", "bare", "ours-cookie", (Goal(0.8, "starlette"),), ("starlette",)),
    Case("cookie write", "write", "bare", "ours-cookie", (Goal(1.0, "starlette"),), ("starlette",)),
    Case(
        "Redis read",
        "read",
        "raw-redis",
        "ours-redis",
        (Goal(1.15),),
        ("starsessions-redis", "starsessions-redis-autoload"),
    ),
    Case(
        "Redis write",
        "write",
        "raw-redis",
        "ours-redis",
        (Goal(1.15), Goal(1.0, "starsessions-redis")),
        ("starsessions-redis",),
    ),
    Case("SQLite read", "read", "raw-sqlite", "ours-sqlite", (Goal(1.2),)),
    Case("SQLite write", "write", "raw-sqlite", "ours-sqlite", (Goal(1.3),)),
]
SWEEP_CASES = [
    Case(f"{family} write, 100 KB / 1 KB", "write", f"{family}-1k", f"{family}-100k", goals)
    for family, goals in (
        ("ours-sqlite", (Goal(1.5),)),
        ("ours-redis", (Goal(1.5),)),
        ("starsessions-redis", ()),
    )
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 25; quick 4)")
    parser.add_argument("--per-round", type=int, help="requests per cell per round (120; 30)")
    parser.add_argument("--only", help="comma-separated configuration names")
    parser.add_argument("--no-sweep", action="store_true", help="skip the write-size sweep")


async def check(config: Config, built: Built) -> None:
    """Fail loudly if an app does not do what its numbers claim."""
    for endpoint in config.endpoints:
        reply = await call(built.app, f"/{endpoint}", built.cookie)
        if reply.status != 200 or reply.body != b"alice":
            raise RuntimeError(f"{config.name}: /{endpoint} answered {reply.status} {reply.body!r}")


async def measure(
    configs: list[Config], env: Env, rounds: int, per_round: int, skipped: dict[str, str]
) -> dict[str, dict[str, list[float]]]:
    """Per configuration and endpoint, the median of each round's requests (us)."""
    built: dict[str, Built] = {}
    try:
        for config in configs:
            try:
                built[config.name] = await build(config, env)
            except Skip as exc:
                skipped[config.name] = str(exc)
                continue
            await check(config, built[config.name])
        live = [c for c in configs if c.name in built]
        samples: dict[str, dict[str, list[float]]] = {c.name: {} for c in live}
        for number in range(-1, rounds):  # round -1 warms up: imports, connections, caches
            for config in live:  # A B C ... A B C ...: drift hits every configuration alike
                b = built[config.name]
                for endpoint in config.endpoints:
                    times = await timed(b.app, f"/{endpoint}", b.cookie, per_round)
                    if number >= 0:
                        samples[config.name].setdefault(endpoint, []).append(
                            statistics.median(times)
                        )
            log(f"  round {number + 1}/{rounds}")
        return samples
    finally:
        for b in built.values():
            await b.aclose()


def cells(samples: dict[str, dict[str, list[float]]], configs: list[Config]) -> list[str]:
    lines = ["| configuration | untouched us | read us | write us |", "|---|---:|---:|---:|"]
    for config in configs:
        if config.name in samples:
            row = [
                fmt(samples[config.name][e]) if e in samples[config.name] else "-"
                for e in ENDPOINTS
            ]
            lines.append(f"| `{config.name}` ({config.label}) | " + " | ".join(row) + " |")
    return lines


def sweep_cells(samples: dict[str, dict[str, list[float]]]) -> list[str]:
    sizes = [f"{s // 1000} KB us" for s in SWEEP_SIZES]
    lines = [
        "| store (write, one key changed) | " + " | ".join(sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for family in dict.fromkeys(c.name.rsplit("-", 1)[0] for c in SWEEP):
        row = [
            fmt(samples[n]["write"]) if (n := f"{family}-{s // 1000}k") in samples else "-"
            for s in SWEEP_SIZES
        ]
        lines.append(f"| `{family}` | " + " | ".join(row) + " |")
    return lines


def ratio_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| case | configuration | against | ratio [p10-p90] | goal | verdict |",
        "|---|---|---|---:|---|---|",
    ]
    for r in rows:
        verdict = f"**{r['verdict']}**" if r["verdict"] == "MISS" else r["verdict"]
        lines.append(
            f"| {r['case']} | `{r['config']}` | `{r['floor']}` | {r['ratio']:.2f}x "
            f"[{r['p10']:.2f}-{r['p90']:.2f}] | {r['goal']} | {verdict} |"
        )
    return lines


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds = args.rounds or (4 if ctx.quick else 25)
    per_round = args.per_round or (30 if ctx.quick else 120)
    configs = [*CONFIGS, *([] if args.no_sweep else SWEEP)]
    if args.only:
        configs = [c for c in configs if c.name in args.only.split(",")]
    skipped: dict[str, str] = {}
    redis_url = ""
    if any(c.needs_redis for c in configs):
        try:
            redis_url = ctx.services.url(REDIS)
        except Unavailable as exc:
            skipped.update({c.name: str(exc) for c in configs if c.needs_redis})
            configs = [c for c in configs if not c.needs_redis]
    log(f"  {len(configs)} configurations, {rounds} rounds x {per_round} requests")
    env = Env(redis_url=redis_url, tmpdir=str(ctx.tmpdir))
    samples = asyncio.run(measure(configs, env, rounds, per_round, skipped))
    rows = ratio_rows(samples, CASES)
    sweep_rows = ratio_rows(samples, SWEEP_CASES)
    ratios = [
        "Median of per-round ratios [p10-p90]; lower is better. Goals from issue 16; "
        "a goal naming a configuration is relative to that configuration's ratio.",
        "",
        *ratio_table(rows),
    ]
    lines = [
        f"{rounds} interleaved rounds x {per_round} requests per cell.",
        "",
        *cells(samples, [c for c in configs if c in CONFIGS]),
        "",
        "### Ratios",
        "",
        *ratios,
    ]
    if any(c in SWEEP for c in configs):
        lines += [
            "",
            "### Write-size sweep (session of N KB, one small key changed)",
            "",
            *sweep_cells(samples),
            "",
            *ratio_table(sweep_rows),
        ]
    chart = None
    if rows:
        from ..chart import draw

        chart = draw(rows, ctx.out / "ratios.png")
        ratios = [f"![ratios](bench/results/{chart.name})", "", *ratios]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in skipped.items())]
    data = {
        "rounds": rounds,
        "per_round": per_round,
        "samples_us": samples,
        "ratios": rows,
        "sweep_ratios": sweep_rows,
        "skipped": skipped,
        "chart": str(chart),
    }
    return Section(TITLE, lines, data, readme=ratios)

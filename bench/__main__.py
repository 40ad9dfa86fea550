"""``python -m bench``: asgi-server-sessions against bare Starlette, its peers and raw-I/O floors.

    .venv/bin/python -m bench            # in-process, full (a few minutes)
    .venv/bin/python -m bench --quick    # in-process, ~30 s
    .venv/bin/python -m bench --http     # also under uvicorn, with a load generator

Writes bench/results/latest.json and latest.md; a full run also copies the Markdown to
bench/RESULTS.md. Starts its own redis-server unless REDIS_URL is set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import harness
from .harness import (
    CONFIGS,
    SWEEP,
    Built,
    Config,
    Env,
    Skip,
    build,
    call,
    ratio_rows,
    ratio_table,
    spread,
    timed,
)
from .services import RedisUnavailable, redis_server

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# (endpoint, config, floor config, goal or None for "for comparison")
RATIOS: list[tuple[str, str, str, float | None]] = [
    ("untouched", "ours-memory", "bare", 1.15),
    ("untouched", "ours-sqlite", "bare", 1.15),
    ("untouched", "ours-redis", "bare", 1.15),
    ("untouched", "ours-cookie", "bare", 1.15),
    ("untouched", "ours-memory-autoload", "bare", None),
    ("untouched", "starlette", "bare", None),
    ("untouched", "starsessions-memory", "bare", None),
    ("untouched", "starsessions-memory-autoload", "bare", None),
    ("untouched", "starsessions-redis", "bare", None),
    ("read", "ours-memory", "bare", 1.8),
    ("read", "ours-memory-autoload", "bare", None),
    ("read", "ours-cookie", "bare", None),
    ("read", "starlette", "bare", None),
    ("read", "starsessions-memory", "bare", None),
    ("read", "starsessions-memory-autoload", "bare", None),
    ("read", "ours-redis", "raw-redis", 1.15),
    ("read", "starsessions-redis", "raw-redis", None),
    ("read", "starsessions-redis-autoload", "raw-redis", None),
    ("write", "ours-redis", "raw-redis", 1.15),
    ("write", "starsessions-redis", "raw-redis", None),
    ("read", "ours-sqlite", "raw-sqlite", 1.2),
    ("write", "ours-sqlite", "raw-sqlite", 1.3),
    ("write", "ours-memory", "bare", None),
    ("write", "ours-cookie", "bare", None),
    ("write", "starlette", "bare", None),
    ("write", "starsessions-memory", "bare", None),
]
SWEEP_RATIOS: list[tuple[str, str, str, float | None]] = [
    ("write", f"{family}-100k", f"{family}-1k", goal)
    for family, goal in (("ours-sqlite", 1.5), ("ours-redis", 1.5), ("starsessions-redis", None))
]


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


async def check(config: Config, built: Built) -> None:
    """Fail loudly if an app does not do what its numbers claim."""
    if "read" in config.endpoints:
        reply = await call(built.app, "/read", built.cookie)
        if reply.status != 200 or reply.body != b"alice":
            raise RuntimeError(f"{config.name}: /read answered {reply.status} {reply.body!r}")
    if "untouched" in config.endpoints:
        reply = await call(built.app, "/untouched", built.cookie)
        if reply.status != 200 or (config.name.startswith("ours") and reply.set_cookie()):
            raise RuntimeError(f"{config.name}: /untouched answered {reply.status} or set a cookie")
    reply = await call(built.app, "/write", built.cookie)
    if reply.status != 200:
        raise RuntimeError(f"{config.name}: /write answered {reply.status}")


async def in_process(
    configs: list[Config], env: Env, rounds: int, per_round: int
) -> tuple[dict[str, dict[str, list[float]]], dict[str, str]]:
    """Per config and endpoint, the per-round medians (microseconds per request)."""
    built: dict[str, Built] = {}
    skipped: dict[str, str] = {}
    try:
        for config in configs:
            try:
                built[config.name] = b = await build(config, env)
            except Skip as exc:
                skipped[config.name] = str(exc)
                log(f"  skip {config.name}: {exc}")
                continue
            await check(config, b)
        live = [c for c in configs if c.name in built]
        for config in live:  # warm-up: imports, connections, caches, JIT-free but still
            for endpoint in config.endpoints:
                b = built[config.name]
                await timed(b.app, f"/{endpoint}", b.cookie, max(20, per_round // 2))
        samples: dict[str, dict[str, list[float]]] = {
            c.name: {e: [] for e in c.endpoints} for c in live
        }
        started = time.monotonic()
        for r in range(rounds):
            for config in live:  # A B C ... A B C ...: drift hits every configuration alike
                b = built[config.name]
                for endpoint in config.endpoints:
                    times = await timed(b.app, f"/{endpoint}", b.cookie, per_round)
                    samples[config.name][endpoint].append(statistics.median(times))
            if r == 0:
                eta = (time.monotonic() - started) * rounds
                log(f"  round 1/{rounds} done; about {eta:.0f} s for all rounds")
        return samples, skipped
    finally:
        for b in built.values():
            await b.aclose()


def cell_table(samples: dict[str, dict[str, list[float]]], labels: dict[str, str]) -> list[str]:
    lines = [
        "| configuration | untouched us | read us | write us |",
        "|---|---:|---:|---:|",
    ]
    for name, by_endpoint in samples.items():
        cells = []
        for endpoint in harness.ENDPOINTS:
            values = by_endpoint.get(endpoint)
            if values:
                med, p10, p90 = spread(values)
                cells.append(f"{med:.1f} [{p10:.1f}-{p90:.1f}]")
            else:
                cells.append("-")
        lines.append(f"| `{name}` ({labels.get(name, '')}) | " + " | ".join(cells) + " |")
    return lines


def sweep_table(samples: dict[str, dict[str, list[float]]]) -> list[str]:
    sizes = [f"{s // 1000} KB" for s in harness.SWEEP_SIZES]
    lines = [
        "| store (write, one key changed) | " + " | ".join(f"{s} us" for s in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    families = sorted(
        {c.name.rsplit("-", 1)[0] for c in SWEEP},
        key=[c.name.rsplit("-", 1)[0] for c in SWEEP].index,
    )
    for family in families:
        cells = []
        for size in harness.SWEEP_SIZES:
            values = samples.get(f"{family}-{size // 1000}k", {}).get("write")
            if values:
                med, p10, p90 = spread(values)
                cells.append(f"{med:.1f} [{p10:.1f}-{p90:.1f}]")
            else:
                cells.append("-")
        lines.append(f"| `{family}` | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~30 s run (fewer rounds)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 25; quick 6)")
    parser.add_argument(
        "--per-round", type=int, help="requests per cell per round (default 120; quick 60)"
    )
    parser.add_argument("--only", help="comma-separated configuration names to run")
    parser.add_argument("--no-sweep", action="store_true", help="skip the write-size sweep")
    parser.add_argument("--http", action="store_true", help="also run under uvicorn, loaded")
    parser.add_argument("--http-seconds", type=float, help="seconds per HTTP slice (default 2)")
    parser.add_argument("--http-rounds", type=int, help="HTTP rounds (default 3; quick 1)")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP connections (32)")
    args = parser.parse_args(argv)

    rounds = args.rounds or (6 if args.quick else 25)
    per_round = args.per_round or (60 if args.quick else 120)
    configs = list(CONFIGS) + ([] if args.no_sweep else list(SWEEP))
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in configs if c.name in wanted]
    labels = {c.name: c.label for c in configs}

    info = harness.versions()
    print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"Starlette's SessionMiddleware: starlette {info['starlette']}")

    services = contextlib.ExitStack()
    redis_url = os.environ.get("REDIS_URL")
    tmpdir = tempfile.mkdtemp(prefix="bench-")
    started = time.monotonic()
    try:
        if not redis_url:
            try:
                redis_url = services.enter_context(redis_server())
                print(f"Started redis-server on {redis_url}")
            except RedisUnavailable as exc:
                print(f"No Redis: {exc}; Redis configurations skipped")
                configs = [c for c in configs if "redis" not in c.name]
        else:
            print(f"Using REDIS_URL={redis_url}")
        env = Env(redis_url=redis_url or "", tmpdir=tmpdir)

        log(f"In-process: {len(configs)} configurations, {rounds} rounds x {per_round} requests")
        samples, skipped = asyncio.run(in_process(configs, env, rounds, per_round))
        rows = ratio_rows(samples, RATIOS)
        sweep_rows = ratio_rows(samples, SWEEP_RATIOS)

        http_result: dict[str, Any] | None = None
        if args.http:
            from . import http

            http_result = http.run(
                env,
                seconds=args.http_seconds or (1.0 if args.quick else 2.0),
                rounds=args.http_rounds or (1 if args.quick else 3),
                concurrency=args.concurrency,
                only=set(args.only.split(",")) if args.only else None,
            )
    finally:
        services.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    elapsed = time.monotonic() - started

    main_samples = {k: v for k, v in samples.items() if k in {c.name for c in CONFIGS}}
    sweep_samples = {k: v for k, v in samples.items() if k not in main_samples}
    md = [
        "# asgi-server-sessions benchmark",
        "",
        f"`{' '.join(['python -m bench', *(argv if argv is not None else sys.argv[1:])])}` — "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        + ", ".join(f"{k} {v}" for k, v in info.items())
        + f"; {rounds} interleaved rounds x {per_round} requests per cell; {elapsed:.0f} s.",
        "",
        "## In-process (ASGI called directly), median us per request [p10-p90 of round medians]",
        "",
        *cell_table(main_samples, labels),
        "",
        "## Ratios (median of per-round ratios [p10-p90]; lower is better)",
        "",
        *ratio_table(rows),
    ]
    if sweep_samples:
        md += [
            "",
            "## Write-size sweep (session of N KB, one small key changed)",
            "",
            *sweep_table(sweep_samples),
            "",
            *ratio_table(sweep_rows),
        ]
    if http_result is not None:
        from . import http

        md += ["", *http.markdown(http_result)]
    if skipped:
        md += ["", "Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in skipped.items())]
    text = "\n".join(md) + "\n"
    print()
    print(text)

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.md").write_text(text)
    payload = {
        "argv": argv if argv is not None else sys.argv[1:],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "versions": info,
        "rounds": rounds,
        "per_round": per_round,
        "seconds": elapsed,
        "samples_us": samples,
        "ratios": rows,
        "sweep_ratios": sweep_rows,
        "http": http_result,
        "skipped": skipped,
    }
    (RESULTS / "latest.json").write_text(json.dumps(payload, indent=2) + "\n")
    if not args.quick and not args.only:
        (HERE / "RESULTS.md").write_text(text)
        include_in_readme(text)
        print("Wrote bench/results/latest.{json,md}, bench/RESULTS.md and README.md's table")
    else:
        print("Wrote bench/results/latest.{json,md} (bench/RESULTS.md only on a full run)")
    return 0


README = HERE.parent / "README.md"
_START, _END = "<!-- bench:start -->", "<!-- bench:end -->"


def include_in_readme(results: str, readme: Path = README) -> None:
    """Put a full run's tables into the README, between its bench markers."""
    text = readme.read_text()
    head, start, rest = text.partition(_START)
    _, end, tail = rest.partition(_END)
    if not (start and end):
        raise SystemExit(f"{readme} has no {_START} ... {_END} section for the results")
    body = results.split("\n", 1)[1].replace("\n## ", "\n#### ")  # under the README's heading
    readme.write_text(f"{head}{_START}\n{body.strip()}\n{_END}{tail}")


if __name__ == "__main__":
    raise SystemExit(main())

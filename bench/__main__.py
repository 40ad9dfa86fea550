"""``python -m bench [--quick] [SUITE [options]]``: us against our peers and the floors.

    python -m bench                  # the full run (make bench): every suite, then
                                     # bench/RESULTS.md, bench/results/*, README's table
    python -m bench --quick          # every suite, briefly (a smoke run; commits nothing)
    python -m bench inprocess        # one suite; python -m bench SUITE --help for options
    python -m bench profile ours-memory read

Every run writes bench/results/latest/SUITE.{md,json}. Servers (redis-server) start once per
run on free loopback ports and stop at its end; REDIS_URL names an existing server instead.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any

from . import harness
from .harness import Context, Section, log, skipped
from .services import Services, Unavailable
from .suites import FULL, SUITES


def parser(modules: dict[str, ModuleType]) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    top.add_argument("--quick", action="store_true", help="a short smoke run of each suite")
    top.add_argument(
        "--services",
        choices=("auto", "none"),
        default="auto",
        help="none: start no server; suites and configurations that need one are skipped",
    )
    top.add_argument("--out", type=Path, help="write results here (default bench/results)")
    sub = top.add_subparsers(dest="suite", metavar="SUITE", help=", ".join(SUITES))
    for name, module in modules.items():
        suite = sub.add_parser(name, help=module.TITLE, description=module.__doc__)
        suite.add_argument(
            "--quick", action="store_true", default=argparse.SUPPRESS, help="a short smoke run"
        )
        module.add_arguments(suite)
    return top


def run_suite(module: ModuleType, ctx: Context, args: argparse.Namespace, command: str) -> Section:
    log(f"== {command}")
    started = time.monotonic()
    try:
        section: Section = module.run(ctx, ctx.resolve(args))
    except Unavailable as exc:
        section = skipped(module.TITLE, str(exc))
    except Exception as exc:  # one broken suite must not cost a full run the others' figures
        traceback.print_exc()
        section = Section(module.TITLE, [f"**FAILED**: {type(exc).__name__}: {exc}"])
        section.data["failed"] = f"{type(exc).__name__}: {exc}"
    section.command = command
    log(f"== {args.suite}: {time.monotonic() - started:.0f} s")
    return section


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so every cleanup (netns, servers) runs


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    modules = {name: importlib.import_module(path) for name, path in SUITES.items()}
    top = parser(modules)
    args = top.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    full = args.suite is None
    quick = ["--quick"] if args.quick else []
    # FULL's arguments size the real run; a quick one keeps each suite's quick defaults.
    plan = [suite_argv[:1] if args.quick else suite_argv for suite_argv in FULL]
    runs = [top.parse_args([*quick, *suite_argv]) for suite_argv in plan] if full else [args]
    out = args.out or (harness.RESULTS if full and not args.quick else harness.LATEST)
    services = Services(allowed=args.services == "auto")
    sections: dict[str, Section] = {}
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            for run in runs:
                ctx = Context(quick=run.quick, services=services, tmpdir=Path(tmp), out=out)
                typed = [*quick, *plan[runs.index(run)]] if full else argv
                command = shlex.join(["python", "-m", "bench", *typed])
                sections[run.suite] = section = run_suite(modules[run.suite], ctx, run, command)
                print(section.markdown(), flush=True)
                harness.write_latest(run.suite, section, harness.LATEST if not args.out else out)
    finally:
        services.close()
        signal.signal(signal.SIGTERM, previous)
    if full and not args.quick and not args.out:
        harness.write_full(sections, time.monotonic() - started)
        log("Wrote bench/RESULTS.md, bench/results/full.json, bench/results/ratios.png, README")
    failed = [name for name, section in sections.items() if "failed" in section.data]
    if failed:
        log(f"FAILED: {', '.join(failed)} (see above)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

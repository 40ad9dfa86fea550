"""What every suite runs on: a context (services, scratch space, quick mode), a section
of results, and the writing of results, the README table and the chart.

A suite is a module in ``bench/suites`` with ``TITLE``, ``add_arguments(parser)`` and
``run(ctx, args) -> Section``; it times things with :mod:`bench.stats` and gets servers
from ``ctx.services``. Everything else (which suites a full run runs, where results go,
printing) happens here once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

from .services import Services

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"  # a full run's files, committed
LATEST = RESULTS / "latest"  # every run's files, ignored by git
README = HERE.parent / "README.md"
_START, _END = "<!-- bench:start -->", "<!-- bench:end -->"


def log(*args: Any) -> None:
    """Progress goes to stderr, so stdout is the report alone."""
    print(*args, file=sys.stderr, flush=True)


T = TypeVar("T")


@dataclass
class Context:
    quick: bool
    services: Services
    tmpdir: Path
    out: Path  # where this run writes charts and results

    def pick(self, given: T | None, full: T, quick: T) -> T:
        """An option's value: as given, else the full or the quick run's default."""
        return given if given is not None else (quick if self.quick else full)

    def resolve(self, args: argparse.Namespace) -> argparse.Namespace:
        """``args`` with each of the suite's :func:`sized` options given its value."""
        for name, (full, quick, _) in getattr(args, "sizes", {}).items():
            setattr(args, name, self.pick(getattr(args, name), full, quick))
        return args


def sized(parser: argparse.ArgumentParser, **sizes: tuple[Any, Any, str]) -> None:
    """Options that size a run, ``name=(full, quick, what)``: ``--name``, by default
    ``full`` (``quick`` in a quick run); the harness resolves them before the suite runs."""
    for name, (full, quick, what) in sizes.items():
        text = f"{what} ({full:,}; quick {quick:,})"
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(full), help=text)
    parser.set_defaults(sizes={**(parser.get_default("sizes") or {}), **sizes})


@dataclass
class Section:
    """One suite's results: Markdown for people, data for machines."""

    title: str
    lines: list[str]
    data: dict[str, Any] = field(default_factory=dict)
    readme: list[str] = field(default_factory=list)  # what the README shows of it
    command: str = ""  # filled in by the harness: the command that reproduces it

    def markdown(self) -> str:
        body = "\n".join(self.lines)
        return f"## {self.title}\n\n`{self.command}`\n\n{body}\n"


def skipped(title: str, reason: str) -> Section:
    return Section(title, [f"Skipped: {reason}."], {"skipped": reason})


def table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table; a column named ``"name:"`` is right-aligned (figures)."""
    rule = "|".join("---:" if h.endswith(":") else "---" for h in head)
    names = " | ".join(h.removesuffix(":") for h in head)
    return [f"| {names} |", f"|{rule}|", *("| " + " | ".join(map(str, r)) + " |" for r in rows)]


DISTRIBUTIONS = "starlette starsessions redis aiosqlite asyncpg uvicorn asgi-server-sessions"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "cpus": str(os.cpu_count())}
    for dist in DISTRIBUTIONS.split():
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def header(seconds: float) -> str:
    info = versions()
    libs = ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("python", "cpus"))
    return f"Python {info['python']}, {info['cpus']} CPUs; {libs}; {seconds:.0f} s."


def write_latest(name: str, section: Section, out: Path = LATEST) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(section.markdown())
    payload = {"command": section.command, "versions": versions(), **section.data}
    (out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")


def write_full(
    sections: dict[str, Section], seconds: float, out: Path = RESULTS, results: Path | None = None
) -> None:
    """A full run: bench/RESULTS.md, results/full.json and the README's table."""
    results = results or HERE / "RESULTS.md"
    text = "\n".join(
        ["# asgi-server-sessions benchmark", "", f"`make bench` — {header(seconds)}", ""]
        + [section.markdown() for section in sections.values()]
        + kept_sections(results, {section.title for section in sections.values()})
    )
    results.write_text(text)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "versions": versions(),
        "seconds": seconds,
        "suites": {name: {"command": s.command, **s.data} for name, s in sections.items()},
    }
    (out / "full.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    readme = [f"`make bench` — {header(seconds)} All tables: [bench/RESULTS.md](bench/RESULTS.md)."]
    for section in sections.values():
        if section.readme:  # under the README's "## Benchmarks": headings two levels down
            lines = [re.sub(r"^(###+) ", r"##\1 ", line) for line in section.readme]
            readme += ["", f"#### {section.title}", "", f"`{section.command}`", "", *lines]
    include_in_readme("\n".join(readme))


def kept_sections(results: Path, titles: set[str]) -> list[str]:
    """The sections of ``results`` that this run does not write: a suite outside the full
    run, a decided experiment's findings. A full run keeps them, after its own."""
    if not results.exists():
        return []
    parts = re.split(r"(?m)^(?=## )", results.read_text())[1:]
    return [part.rstrip() + "\n" for part in parts if part.split("\n", 1)[0][3:] not in titles]


def include_in_readme(body: str, readme: Path = README) -> None:
    """Put ``body`` into the README between its bench markers."""
    text = readme.read_text()
    head, start, rest = text.partition(_START)
    _, end, tail = rest.partition(_END)
    if not (start and end):
        raise SystemExit(f"{readme} has no {_START} ... {_END} section for the results")
    readme.write_text(f"{head}{_START}\n{body.strip()}\n{_END}{tail}")

"""After the run, one line per store: programs checked, time, divergences, paths reached.

A long run is split into chunks (each a fresh hypothesis run, so its memory stays
bounded); their tallies are added up here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest


@dataclass
class Tally:
    """One chunk of programs on one store."""

    kind: str
    programs: int = 0
    seconds: float = 0.0
    first_failure: tuple[int, float] | None = None
    """(program number, seconds into the chunk) of the chunk's first divergence."""
    events: Counter[str] = field(default_factory=Counter)
    note: str = ""


TALLIES = pytest.StashKey[list[Tally]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[TALLIES] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tallies = terminalreporter.config.stash.get(TALLIES, [])
    if not tallies:
        return
    terminalreporter.section("model checker")
    for kind in dict.fromkeys(t.kind for t in tallies):
        chunks = [t for t in tallies if t.kind == kind]
        programs = sum(t.programs for t in chunks)
        seconds = sum(t.seconds for t in chunks)
        line = f"{kind} store: {programs} programs in {seconds:.1f} s"
        done = 0
        failed = [t for t in chunks if t.first_failure is not None]
        for chunk in chunks:
            if chunk.first_failure is not None:
                number, after = chunk.first_failure
                line += f"; divergence at program #{done + number} ({after:.1f} s into its chunk)"
                break
            done += chunk.programs
        line += f", {len(failed)} of {len(chunks)} chunks diverged" if failed else ", 0 divergences"
        terminalreporter.write_line(line + chunks[0].note)
        events: Counter[str] = Counter()
        for chunk in chunks:
            events.update(chunk.events)
        reached = ", ".join(f"{name} {count}" for name, count in sorted(events.items()))
        terminalreporter.write_line(f"  paths reached: {reached}")

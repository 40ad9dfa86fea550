"""Prints each store's model-checker line (programs, time, divergences) after the run."""

from __future__ import annotations

import pytest

SUMMARY_KEY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SUMMARY_KEY] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(SUMMARY_KEY, [])
    if lines:
        terminalreporter.section("model checker")
        for line in lines:
            terminalreporter.write_line(line)

"""Progress of a long CLI job as plain lines on a stream (stderr), at most one a second.

Plain lines rather than a progress-bar library: the display is one line of counts, the
CLI runs on servers where an extra dependency is one more thing to install, and lines
stay readable in ``script`` transcripts, tmux scrollback and CI logs alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["ProgressLine"]


class ProgressLine:
    """Called with the count removed so far; writes ``label: N of TOTAL removed (P%), R/s``.

    Args:
        label: what runs (the command's name).
        stream: where lines go (the CLI passes ``sys.stderr``).
        total: how many there are to do, if known (then a percentage is shown).
        every: seconds between two lines.
        clock: a monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        total: int | None = None,
        every: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.stream = stream
        self.total = total
        self.every = every
        self.clock = clock
        self.started = clock()
        self._last = self.started

    def __call__(self, done: int) -> None:
        now = self.clock()
        if now - self._last < self.every:
            return
        self._last = now
        text = f"{done:,} removed"
        if self.total:
            # Floored, so 100% means done, not 99.6%.
            percent = min(done * 100 // self.total, 100)
            text = f"{done:,} of {self.total:,} removed ({percent}%)"
        self._write(f"{text}, {self._rate(done, now)}")

    def finish(self, done: int) -> None:
        """The closing line: how many, how long, how fast."""
        now = self.clock()
        self._write(f"{done:,} removed in {now - self.started:.1f} s, {self._rate(done, now)}")

    def _rate(self, done: int, now: float) -> str:
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        return f"{rate:,.0f}/s"

    def _write(self, text: str) -> None:
        self.stream.write(f"{self.label}: {text}\n")
        self.stream.flush()

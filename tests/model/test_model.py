"""Random programs of concurrent requests leave every store as the reference model says.

Runs on every store of the ``any_store`` matrix (the cookie store with the programs that
apply to it: one request at a time per client, no revoke or listing). ``MODEL_PROGRAMS``
sets the number of programs per store (300 by default; ``make check-model`` runs
100,000, in chunks of ``MODEL_CHUNK``). Each store is opened once per chunk; programs
are kept apart by fresh owners and keys, and by a wipe of the store where its audit
knows how (tests/model/audit.py).

A failure prints the shrunk program, the interleaving the scheduler chose, the model's
trace and the first divergence, plus how many programs it took to find.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from asgi_sessions import SessionMiddleware, Store
from tests.clock import FakeClock
from tests.model import audit
from tests.model.conftest import TALLIES, Tally
from tests.model.harness import Harness
from tests.model.program import Program, program_strategy
from tests.model.scheduler import Stuck, gate_store

PROGRAMS = int(os.environ.get("MODEL_PROGRAMS", "300"))
# Hypothesis keeps every example of a run in memory (~40 KB each here): a long run is cut
# into chunks of at most this many programs, each a fresh run.
CHUNKS = -(-PROGRAMS // int(os.environ.get("MODEL_CHUNK", "5000")))
PER_CHUNK = -(-PROGRAMS // CHUNKS)

# The suite's 120 s per test is for the default run; a long chunk gets a second a program.
pytestmark = pytest.mark.timeout(max(300, PER_CHUNK))

ACCEPTED = frozenset(inspect.signature(SessionMiddleware.__init__).parameters)


def _pinned() -> tuple[tuple[str, Any], ...]:
    """Diagnostics: ``MODEL_ASSUME="absolute_timeout=None,rotate_on_owner_change=False"``
    fixes options instead of drawing them (also what the model assumes for an option the
    middleware lacks), to study one class of bug at a time."""
    pinned: dict[str, Any] = {}
    for item in filter(None, os.environ.get("MODEL_ASSUME", "").split(",")):
        name, _, text = (part.strip() for part in item.partition("="))
        words = {"None": None, "True": True, "False": False}
        pinned[name] = words[text] if text in words else int(text)
    return tuple(sorted(pinned.items()))


PINNED = _pinned()


# Diagnostics: ``MODEL_SKIP_OPS="Nested,SetOwner"`` leaves those ops out of programs.
SKIPPED_OPS = frozenset(filter(None, os.environ.get("MODEL_SKIP_OPS", "").split(",")))


class ModelRun:
    """One chunk of programs on one store; its tally goes to the summary."""

    def __init__(self, store: Store, clock: FakeClock, kind: str) -> None:
        self.store = store
        self.clock = clock
        self.tally = Tally(kind)
        if not store.keeps_data_in_cookie and not audit.has_audit(store):
            self.tally.note = f" (no integrity audit for {type(store).__name__})"
        self.started = time.monotonic()

    async def check(self, program: Program) -> None:
        tally = self.tally
        tally.programs += 1
        await audit.wipe(self.store)
        # Whole seconds a minute ahead of real time: Redis expires keys by its own clock.
        self.clock.now = float(int(time.time()) + 60)
        harness = Harness(
            self.store, self.clock, program, tag=f"p{tally.programs}-", accepted=ACCEPTED
        )
        try:
            await harness.run()
        except Stuck as exc:
            harness.model.diverge(None, str(exc))
        tally.events.update(harness.model.events)
        if harness.model.divergences:
            if tally.first_failure is None:
                tally.first_failure = (tally.programs, time.monotonic() - self.started)
            raise AssertionError(self.report(program, harness))

    def report(self, program: Program, harness: Harness) -> str:
        number, seconds = self.tally.first_failure or (0, 0.0)
        return "\n".join(
            [
                f"The model and the {self.tally.kind} store diverge.",
                f"First divergence found at program #{number}, after {seconds:.1f} s.",
                "",
                program.describe(),
                "",
                "interleaving: " + " | ".join(harness.scheduler.steps),
                "",
                "model trace:",
                *("  " + line for line in harness.model.trace),
                "",
                "divergence: " + harness.model.divergences[0],
            ]
        )


@pytest.fixture
def model_run(
    any_store: Store, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[ModelRun]:
    gate_store(any_store)
    run = ModelRun(any_store, clock, str(request.node.callspec.params.get("any_store")))
    yield run
    run.tally.seconds = time.monotonic() - run.started
    request.config.stash[TALLIES].append(run.tally)


@settings(
    phases=[Phase.generate, Phase.shrink],
    max_examples=PER_CHUNK,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    database=None,
    print_blob=True,
)
@given(data=st.data())
@pytest.mark.parametrize("chunk", range(CHUNKS), ids=lambda n: f"chunk{n + 1}of{CHUNKS}")
async def test_concurrent_requests_leave_every_store_as_the_model_says(
    model_run: ModelRun, chunk: int, data: st.DataObject
) -> None:
    server = not model_run.store.keeps_data_in_cookie
    program = data.draw(
        program_strategy(server=server, accepted=ACCEPTED, pinned=PINNED, skip=SKIPPED_OPS),
        label="program",
    )
    await model_run.check(program)

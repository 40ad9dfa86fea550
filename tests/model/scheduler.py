"""Gates at every await point a request can interleave at, and the scheduler that opens them.

Each request runs as its own task and stops at a gate: before it starts, before each op,
before its response, and before every call into the store's public coroutine methods
(wrapped generically, so methods added later are gated too). The scheduler opens exactly
one gate at a time and waits until that request reaches its next gate or ends, so store
calls never overlap and the interleaving is a pure function of the program.

The choice: the lowest-numbered request whose gate is open goes next. A request's n-th
gate opens ``delay_at(n)`` steps after it arrived there (its own delays, drawn with it), so
delays are what make requests overtake each other; when every waiting gate is still
closed, the one that opens first goes. One restriction: the clock does not move (another
request's tick) while a request waits at a store gate, since the session reads the clock
just before it calls the store.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

from asgi_sessions import Store
from tests.model import faults

# Lifecycle, not requests' work.
_NOT_GATED = frozenset({"aclose"})


class Gated(Protocol):
    """What the store wrapper needs from the request that calls it."""

    async def gate(self, label: str) -> None: ...

    def store_call(self, method: str) -> str | None:
        """The call runs now; return the fault to inject into it, if any (faults.py)."""


current_request: ContextVar[Gated | None] = ContextVar("model_request", default=None)
_inside_store: ContextVar[bool] = ContextVar("model_inside_store", default=False)


class Stuck(AssertionError):
    """A request neither reached a gate nor finished in time."""


def gate_store(store: Store) -> list[str]:
    """Wrap ``store``'s public coroutine methods with a gate; return their names.

    Calls from outside a scheduled request (the checker's own reads) and calls a store
    makes to itself while serving one (``get`` calling ``load``) pass straight through.
    """
    gated = []
    for name, _ in inspect.getmembers(type(store), inspect.iscoroutinefunction):
        if name.startswith("_") or name in _NOT_GATED:
            continue
        original = getattr(store, name)

        async def call(*args: Any, _original: Any = original, _name: str = name, **kw: Any) -> Any:
            request = current_request.get()
            if request is None or _inside_store.get():
                return await _original(*args, **kw)
            await request.gate(f"store.{_name}")
            fault = request.store_call(_name)
            token = _inside_store.set(True)
            try:
                if fault is not None:
                    return await faults.inject(_name, fault, _original, args, kw)
                return await _original(*args, **kw)
            finally:
                _inside_store.reset(token)

        setattr(store, name, call)
        gated.append(name)
    return gated


class Parked:
    """One request as the scheduler sees it."""

    def __init__(self, number: int, client: int, delay_at: Callable[[int], int]) -> None:
        self.number = number
        self.client = client
        self.delay_at = delay_at
        self.waiting: str | None = None
        self.moves_clock = False
        """The gate it waits at opens onto a clock tick."""
        self.opens_at = 0
        self.gates = 0
        self.started = False
        self.task: asyncio.Task[None] | None = None
        self._go = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done()


class Scheduler:
    """Opens one gate at a time (see the module docstring for which)."""

    def __init__(self, *, timeout: float = 20.0) -> None:
        self._changed = asyncio.Event()
        self.timeout = timeout
        self.step = 0
        self.steps: list[str] = []

    async def gate(self, parked: Parked, label: str, *, moves_clock: bool = False) -> None:
        parked._go.clear()
        parked.gates += 1
        parked.opens_at = self.step + parked.delay_at(parked.gates)
        parked.moves_clock = moves_clock
        parked.waiting = label
        self._changed.set()
        await parked._go.wait()

    async def run(
        self,
        requests: list[tuple[Parked, Callable[[], Any]]],
        *,
        one_at_a_time_per_client: bool,
        stop: Callable[[], bool],
    ) -> None:
        """Run each request's coroutine to the end, one gate at a time."""
        parked_all = [parked for parked, _ in requests]
        for parked, body in requests:
            parked.task = asyncio.create_task(body())
            parked.task.add_done_callback(lambda _: self._changed.set())
        try:
            while True:
                await self._settled(parked_all)
                if stop() or all(parked.done for parked in parked_all):
                    return
                chosen = self._choose(parked_all, one_at_a_time_per_client)
                self.step = max(self.step + 1, chosen.opens_at)
                self.steps.append(f"R{chosen.number} {chosen.waiting}")
                chosen.started = True
                chosen.waiting = None
                chosen._go.set()
        finally:
            for parked in parked_all:
                if parked.task is not None and not parked.task.done():
                    parked.task.cancel()
            await asyncio.gather(
                *(p.task for p in parked_all if p.task is not None), return_exceptions=True
            )

    def _choose(self, parked_all: list[Parked], one_at_a_time_per_client: bool) -> Parked:
        ready = [p for p in parked_all if p.waiting is not None and not p.done]
        if one_at_a_time_per_client:
            # A client sends its next request only after the last one answered.
            busy = {p.client for p in parked_all if p.started and not p.done}
            ready = [p for p in ready if p.started or p.client not in busy]
        if any(p.waiting.startswith("store.") for p in ready if p.waiting):
            # A request computes a write's times just before its store call; time must
            # not jump inside that microseconds-wide window.
            ready = [p for p in ready if not p.moves_clock]
        return min(ready, key=lambda p: (max(p.opens_at, self.step), p.number))

    async def _settled(self, parked_all: list[Parked]) -> None:
        """Wait until every request that has not ended stands at a gate."""

        def settled() -> bool:
            return all(p.done or p.waiting is not None for p in parked_all)

        while not settled():
            self._changed.clear()
            if settled():
                return
            try:
                await asyncio.wait_for(self._changed.wait(), self.timeout)
            except TimeoutError:
                running = [f"R{p.number}" for p in parked_all if not p.done and p.waiting is None]
                raise Stuck(
                    f"{', '.join(running)} neither reached a gate nor finished in "
                    f"{self.timeout:g} s (steps so far: {self.steps})"
                ) from None

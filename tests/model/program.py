"""What a program is, and the hypothesis strategies that draw one.

A program is: middleware options, a few clients (browsers, each with a cookie jar), and
rounds. A round waits ``pause`` seconds (the clock moves), then runs its requests
concurrently; the first rounds log clients in one at a time, the later ones race 2-5
requests. On server stores, half the programs also have a merge round (issue 23): 2-4
requests of one client that append to, consume from and increment the same list and
counter, mostly each loading before any of them saves (``_merge_rounds``). Each
request runs a list of ops on the session, and carries its own ``delays``: (n, steps)
pairs saying that at its n-th gate it lets that many scheduling steps pass before it may
go on (see scheduler.py). No delays is "one request after the other"; shrinking drops
delays and requests without disturbing the others' interleaving.

Values come from small pools so that requests collide on the same keys and owners.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields, replace
from typing import Any

from hypothesis import strategies as st

from tests.model import imports, merges
from tests.model.ops import (
    BAD_VALUES,
    BadSet,
    Clear,
    CycleKey,
    Del,
    Flush,
    Get,
    Later,
    ListSessions,
    Nested,
    Op,
    Pop,
    PopItem,
    Revoke,
    RevokeAll,
    Save,
    Set,
    SetDefault,
    SetExpiry,
    SetOwner,
    Snapshot,
    Tick,
    Update,
)

KEYS = ("a", "b", "c")
OWNER_SLOTS = 2
LONG_PAUSE = 14 * 24 * 3600 + 1  # past the record lifetime used when max_age=None

# Ticks inside a round stay under every fixed expiry moment a program can set (3600 s
# ahead), at most one per request, so a write never lands on an instant already past.
TICKS = (1, 30, 61, 601)
PAUSES = (0, 31, 61, 601, 3601, LONG_PAUSE)
# Rolling rounds (issue 22): one client comes back after less than its idle window (20,
# 30, 60 or 90 s and longer), several times in a row, so throttled renewals are tested.
ROLL_PAUSES = (5, 15, 17, 25, 50, 80)


@dataclass(frozen=True)
class Request:
    client: int
    ops: tuple[Op, ...]
    touch: bool
    """``False``: the view never awaits the session (only a renewal can load it)."""
    status: int
    delays: tuple[tuple[int, int], ...] = ()
    """(gate number, steps to let pass there); gates count from 1 in the order reached."""
    fault: tuple[int, str] | None = None
    """(n, kind): its n-th store call after its load fails, "before" or "after" applying
    (faults.py)."""
    old: int | None = None
    """Sends old cookie ``n`` of the program instead of its jar (a kept copy: imports.py)."""

    def delay_at(self, gate: int) -> int:
        return sum(steps for number, steps in self.delays if number == gate)


@dataclass(frozen=True)
class Round:
    pause: int
    requests: tuple[Request, ...]
    outage: int | None = None
    """The round's n-th store call, whoever makes it, fails before applying (faults.py)."""


@dataclass(frozen=True)
class Options:
    """Middleware options; the model reads the same values."""

    max_age: int | None
    absolute_timeout: int | None
    save_every_request: bool
    renew_interval: int
    rotate_on_owner_change: bool
    detect_nested_changes: bool

    # Options the middleware gained with interface v2; older code gets none of them.
    NEWER = ("renew_interval", "rotate_on_owner_change", "detect_nested_changes")

    def middleware_kwargs(self, accepted: frozenset[str]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "max_age": self.max_age,
            "absolute_timeout": self.absolute_timeout,
            "save_every_request": self.save_every_request,
        }
        kwargs.update({name: getattr(self, name) for name in self.NEWER if name in accepted})
        return kwargs

    def __str__(self) -> str:
        return ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))


@dataclass(frozen=True)
class Program:
    options: Options
    clients: int
    rounds: tuple[Round, ...]
    olds: tuple[Any, ...] = ()
    """Old libraries' sessions some clients start with (imports.py)."""

    def describe(self) -> str:
        lines = [f"options: {self.options}", f"clients: {self.clients}"]
        lines += [f"old cookie o{index}: {old}" for index, old in enumerate(self.olds)]
        number = 0
        for index, round_ in enumerate(self.rounds, 1):
            outage = "" if round_.outage is None else f", store call {round_.outage} fails"
            lines.append(f"round {index} (clock += {round_.pause}s first{outage}):")
            for request in round_.requests:
                number += 1
                ops = "; ".join(map(str, request.ops)) if request.ops else "(no ops)"
                if not request.touch:
                    ops = "(never awaits the session)"
                status = "" if request.status == 200 else f"  -> answers {request.status}"
                waits = ", ".join(f"gate {gate}: {steps}" for gate, steps in request.delays)
                waits = f"  [lets steps pass at {waits}]" if waits else ""
                if request.fault is not None:
                    waits += f"  [store call {request.fault[0]} fails {request.fault[1]}]"
                if request.old is not None:
                    waits += f"  [sends old cookie o{request.old}]"
                lines.append(f"  R{number} client {request.client}: {ops}{status}{waits}")
        return "\n".join(lines)


# -- strategies ----------------------------------------------------------------------
#
# Every choice is one bounded integer that indexes a fixed table (hypothesis spends more
# on nested strategies than on the run itself); index 0 is the simplest choice, so
# shrinking moves toward it.

VALUES: tuple[Any, ...] = (0, 1, "x", [], [1], {"n": 0})
EXPIRIES = (
    *(SetExpiry("int", seconds) for seconds in (30, 300, 7200, 20, 90)),
    SetExpiry("zero", 0),
    SetExpiry("none", 0),
    *(SetExpiry(kind, s) for kind in ("timedelta", "datetime") for s in (3600, 86400)),
)
_PAIRS = [(KEYS[i], KEYS[j]) for i in range(len(KEYS)) for j in range(i + 1, len(KEYS))]


def _update_items() -> list[tuple[tuple[str, Any], ...]]:
    singles = [((key, value),) for key in KEYS for value in VALUES]
    pairs = [((k1, v1), (k2, v2)) for k1, k2 in _PAIRS for v1 in VALUES for v2 in VALUES]
    return singles + pairs


# (weight, ops of that kind): the weights make data ops the most frequent.
_LOCAL_OPS: list[tuple[int, list[Op]]] = [
    (4, [Set(key, value) for key in KEYS for value in VALUES]),
    (2, [Get(key) for key in KEYS]),
    (2, [Pop(key) for key in KEYS]),
    (1, [Del(key) for key in KEYS]),
    (1, [PopItem()]),
    (1, [SetDefault(key, value) for key in KEYS for value in VALUES]),
    (1, [Update(items, ior) for ior in (False, True) for items in _update_items()]),
    (1, [Clear()]),
    (2, [Nested(key, item, mark) for mark in (False, True) for key in KEYS for item in (0, 1)]),
    (1, list(EXPIRIES)),
    (2, [SetOwner(owner) for owner in (*range(OWNER_SLOTS), None)]),
    (1, [Snapshot(kind) for kind in ("dict", "deepcopy", "pickle", "orjson")]),
    (1, [BadSet(kind) for kind in BAD_VALUES]),
    (1, [CycleKey()]),
    (1, [Flush()]),
    (1, [Save()]),
    (2, [Tick(seconds) for seconds in TICKS]),
    (1, [Later(key, item) for key in KEYS for item in (0, 1)]),
    *merges.local_ops(KEYS),
]
# An explicit save between a read (or assignment) and a later change of the same key,
# in place or not: the WebSocket pattern of issue 22 item 9.
_BEFORE_SAVE: tuple[Op, ...] = (
    *(Get(key) for key in KEYS),
    *(Nested(key, 0, False) for key in KEYS),
    *(Set(key, value) for key in KEYS for value in ([0], {"n": 0})),
)
_AFTER_SAVE: tuple[Op, ...] = (
    *(Later(key, 1) for key in KEYS),
    *(Nested(key, 1, mark) for key in KEYS for mark in (False, True)),
    *(Set(key, value) for key in KEYS for value in (1, [1])),
)
_ADMIN_OPS: list[tuple[int, list[Op]]] = [
    (1, [Revoke(owner, client) for owner in range(OWNER_SLOTS) for client in range(3)]),
    (1, [RevokeAll(owner, keep) for keep in (False, True) for owner in range(OWNER_SLOTS)]),
    (1, [ListSessions(owner) for owner in range(OWNER_SLOTS)]),
]


@functools.cache
def _ints(low: int, high: int) -> st.SearchStrategy[int]:
    return st.integers(low, high)


def _pick(draw: st.DrawFn, choices: tuple[Any, ...] | list[Any]) -> Any:
    return choices[draw(_ints(0, len(choices) - 1))] if len(choices) > 1 else choices[0]


@functools.cache
def _op_table(server: bool, skip: frozenset[str]) -> tuple[tuple[Op, ...], ...]:
    """One entry per unit of weight, each the tuple of ops of one kind."""
    table = _LOCAL_OPS + (_ADMIN_OPS if server else [])
    return tuple(
        tuple(ops)
        for weight, ops in table
        if type(ops[0]).__name__ not in skip
        for _ in range(weight)
    )


@st.composite
def _op(draw: st.DrawFn, table: tuple[tuple[Op, ...], ...]) -> Op:
    op: Op = _pick(draw, _pick(draw, table))
    return op


@st.composite
def _request(
    draw: st.DrawFn, ops_drawn: st.SearchStrategy[list[Op]], scripts: bool = False
) -> Request:
    """A request of client 0-2 (the program folds it onto its clients); ``scripts``: now
    and then read a key, ``await save()``, then change that key again."""
    client = draw(_ints(0, 2))
    touch = draw(_ints(0, 3)) != 3  # a quarter never await the session
    ops: list[Op] = []
    if touch:
        ticked = False
        for op in draw(ops_drawn):
            if isinstance(op, Tick):
                if ticked:
                    continue  # at most one tick per request (see TICKS)
                ticked = True
            ops.append(op)
        if scripts and draw(_ints(0, 3)) == 3:
            first: Any = _pick(draw, _BEFORE_SAVE)
            then = replace(_pick(draw, _AFTER_SAVE), key=first.key)
            at = draw(_ints(0, len(ops)))
            ops[at:at] = [first, Save(), then]
    status = 500 if draw(_ints(0, 4)) == 4 else 200
    # A request passes about ten gates (start, load, each op, respond, store calls).
    delays = [(code // 3 + 1, (1, 2, 4)[code % 3]) for code in draw(_delays)]
    old = draw(_ints(0, 5))  # 0-1: a kept copy of an old cookie (if the program has one)
    return Request(client, tuple(ops), touch, status, tuple(delays), old=old if old < 2 else None)


_delays = st.lists(_ints(0, 29), max_size=3)


@functools.cache
def _merge_table(skip: frozenset[str]) -> tuple[tuple[Op, ...], ...]:
    """program's _op_table for a merge round's ops (merges.round_ops)."""
    return tuple(
        tuple(ops)
        for weight, ops in merges.round_ops(KEYS)
        if type(ops[0]).__name__ not in skip
        for _ in range(weight)
    )


# A merge round's waits, at a request's first op (after its load) or at its response
# (before its save): mostly long enough for all the others to load first (two steps
# each), so that every save but the first races; now and then shorter or none, so that
# some load after an earlier one saved. The random rounds cover requests that overlap
# less.
MERGE_WAITS = (8, 16, 24, 4, 0)


def _merge_rounds(
    draw: st.DrawFn, clients: int, olds: Any, ops_drawn: st.SearchStrategy[list[Op]]
) -> list[Round]:
    """Issue 23: a setup request stores a list (and a counter), then 2-4 requests of the
    same client append to, consume from and increment those keys at once, each loading
    the session before some other one saves."""
    # A client holding an old cookie gets a key that serves one request (imports.py):
    # the round's requests would all rotate. Another client, or one more request first.
    free = [client for client in range(clients) if client not in imports.holders(olds)]
    client = _pick(draw, free or list(range(clients)))
    setup: list[Op] = []
    listed = _pick(draw, merges.ROUND_LISTS)
    if listed is not None:
        setup.append(Set(KEYS[0], listed))
    counter = _pick(draw, (None, 0, 5))
    if counter is not None:
        setup.append(Set(KEYS[1], counter))
    if not setup:
        setup.append(Set(KEYS[2], 0))  # the session must exist for the round to share it
    requests = []
    for _ in range(draw(_ints(2, 4))):
        ops = tuple(draw(ops_drawn))
        # Gates: 1 start, 2 the load, 3.. the ops, then the response and the save.
        gate = (3, 3 + len(ops))[draw(_ints(0, 1))]
        steps = _pick(draw, MERGE_WAITS)
        delays = ((gate, steps),) if steps else ()
        status = 500 if draw(_ints(0, 9)) == 9 else 200
        requests.append(Request(client, ops, True, status, delays))
    rounds = [Round(0, (Request(client, tuple(setup), True, 200),))]
    if not free:
        rounds.append(Round(0, (Request(client, (Get(KEYS[0]),), True, 200),)))
    return [*rounds, Round(0, tuple(requests))]


def _draw_login(draw: st.DrawFn, client: int) -> Request:
    """A sequential first request that gives ``client`` a session."""
    ops: list[Op] = [Set(key, _pick(draw, VALUES)) for key in KEYS[: draw(_ints(1, 3))]]
    owner = _pick(draw, (None, *range(OWNER_SLOTS)))
    if owner is not None:
        ops.append(SetOwner(owner))
    expiry = _pick(draw, (None, *EXPIRIES))
    if expiry is not None:
        ops.append(expiry)
    return Request(client, tuple(ops), True, 200)


# The contract's values for the options of interface v2, for code that lacks them
# ("renew_interval 0 until the option exists", as issue 13 asks).
DEFAULTS = {"renew_interval": 0, "rotate_on_owner_change": True, "detect_nested_changes": True}
_OPTION_CHOICES: dict[str, tuple[Any, ...]] = {
    "max_age": (3600, 60, None, 600),
    "absolute_timeout": (None, 900, 120),
    "save_every_request": (False, True),
    "renew_interval": (0, 60, 30),
    "rotate_on_owner_change": (True, False),
    "detect_nested_changes": (True, False),
}


def option_choices(accepted: frozenset[str], pinned: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
    """The values each option is drawn from: ``pinned`` ones fixed, and a newer option the
    middleware does not accept kept at its contract default."""
    choices = {}
    for name, values in _OPTION_CHOICES.items():
        if name in pinned:
            values = (pinned[name],)
        elif name in Options.NEWER and name not in accepted:
            values = (DEFAULTS[name],)
        choices[name] = values
    return choices


@functools.cache
def program_strategy(
    *,
    server: bool,
    accepted: frozenset[str],
    pinned: tuple[tuple[str, Any], ...] = (),
    skip: frozenset[str] = frozenset(),
) -> st.SearchStrategy[Program]:
    """Whole programs. ``server``: the store keeps records (admin ops allowed);
    ``pinned``: options fixed rather than drawn; ``skip``: op classes left out."""
    table = _op_table(server, skip)
    ops = st.lists(_op(table), max_size=4)
    requests = st.lists(_request(ops, "Save" not in skip), min_size=2, max_size=5)
    light = _request(st.lists(_op(table), max_size=1))
    merging = st.lists(_op(_merge_table(skip)), min_size=1, max_size=3) if server else None
    programs = _program(
        option_choices(accepted, dict(pinned)), requests, light, merging, server=server
    )
    # Store faults (faults.py) on server stores: a cookie store has no store to fail.
    return _with_faults(programs) if server else programs


@st.composite
def _with_faults(draw: st.DrawFn, programs: st.SearchStrategy[Program]) -> Program:
    """Now and then a request's n-th store call fails (before or after applying), or a
    round's n-th store call, whoever makes it (tests/model/faults.py)."""
    program = draw(programs)
    rounds = []
    for round_ in program.rounds:
        requests = []
        for request in round_.requests:
            if draw(_ints(0, 5)) == 5:
                fault = (draw(_ints(1, 2)), ("before", "after")[draw(_ints(0, 1))])
                request = replace(request, fault=fault)
            requests.append(request)
        outage = draw(_ints(1, 8)) if draw(_ints(0, 7)) == 7 else None
        rounds.append(replace(round_, requests=tuple(requests), outage=outage))
    return replace(program, rounds=tuple(rounds))


@st.composite
def _program(
    draw: st.DrawFn,
    choices: dict[str, tuple[Any, ...]],
    requests_drawn: st.SearchStrategy[list[Request]],
    light_drawn: st.SearchStrategy[Request],
    merging: st.SearchStrategy[list[Op]] | None = None,
    server: bool = False,
) -> Program:
    options = Options(**{name: _pick(draw, values) for name, values in choices.items()})
    clients = draw(_ints(1, 3))
    rounds: list[Round] = []
    olds = draw(imports.olds(clients)) if server else ()
    for client in range(clients):
        if draw(_ints(0, 3)) != 3 and client not in imports.holders(olds):
            rounds.append(Round(0, (_draw_login(draw, client),)))
    if draw(_ints(0, 2)) == 2:
        # Rolling (issue 22): one client comes back again and again, with short pauses.
        client = draw(_ints(0, clients - 1))
        for _ in range(draw(_ints(2, 5))):
            request = replace(draw(light_drawn), client=client)
            rounds.append(Round(_pick(draw, ROLL_PAUSES), (request,)))
    merged = merging is not None and draw(_ints(0, 1)) == 1
    if merged:
        assert merging is not None
        rounds += _merge_rounds(draw, clients, olds, merging)
        if True in choices["detect_nested_changes"]:
            # Appends and consumes change lists in place: without detection nothing saves.
            options = replace(options, detect_nested_changes=True)
    for _ in range(draw(_ints(0, 1) if merged else _ints(1, 2))):
        pause = _pick(draw, PAUSES)
        requests = [replace(r, client=r.client % clients) for r in draw(requests_drawn)]
        rounds.append(Round(pause, tuple(requests)))
    return imports.with_olds(Program(options, clients, tuple(rounds)), olds)

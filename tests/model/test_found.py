"""Programs the long runs found divergent, kept: each runs on every server store, every time.

``make check-model`` draws 100,000 random programs per store; a divergence it finds is
shrunk, fixed (in the library or, when the model was wrong, in the model), and its
program lands here, so the default ``make test`` holds the fix. Each entry names what
went wrong and where it was first seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asgi_sessions import Store
from tests.clock import FakeClock
from tests.model.imports import Old
from tests.model.merges import Append, Consume
from tests.model.ops import Clear, CycleKey, Get, Later, Save, Set, SetExpiry, SetOwner, Tick
from tests.model.program import Options, Program, Request, Round
from tests.model.test_model import ModelRun, gate_store  # scheduler after harness: no cycle

FOUND: dict[str, tuple[str, Program]] = {
    "explicit_save_in_the_same_second_as_the_cookie": (
        "a save in the cookie's second passed for the one it carries (redis-cluster, 517a7bb)",
        Program(
            options=Options(
                max_age=3600,
                absolute_timeout=None,
                save_every_request=True,
                renew_interval=60,
                rotate_on_owner_change=True,
                detect_nested_changes=True,
            ),
            clients=1,
            rounds=(
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(Set(key="a", value=0),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(
                                Set(key="a", value=0),
                                Set(key="a", value=0),
                                SetExpiry(kind="int", seconds=7200),
                                Get(key="a"),
                                Save(),
                                Later(key="a", item=1),
                            ),
                            touch=True,
                            status=200,
                            delays=((9, 4),),
                            fault=None,
                            old=None,
                        ),
                        Request(
                            client=0,
                            ops=(),
                            touch=False,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
            ),
            olds=(),
        ),
    ),
    "emptying_cluster_move_with_a_lost_reply": (
        "a cluster move emptied it, reply lost: 503 with the pair (redis-cluster, 517a7bb)",
        Program(
            options=Options(
                max_age=3600,
                absolute_timeout=120,
                save_every_request=False,
                renew_interval=0,
                rotate_on_owner_change=True,
                detect_nested_changes=True,
            ),
            clients=2,
            rounds=(
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(Set(key="a", value=0),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=1,
                            ops=(Set(key="a", value=0),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=25,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=False,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=80,
                    requests=(
                        Request(
                            client=0,
                            ops=(Append(key="a", item=100),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(CycleKey(), SetOwner(owner=0), Consume(key="a", count=1)),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=(2, "after"),
                            old=None,
                        ),
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
            ),
            olds=(),
        ),
    ),
    "explicit_save_then_a_renewal_skipped": (
        "the same-second explicit save, a longer program (redis-cluster, 517a7bb)",
        Program(
            options=Options(
                max_age=3600,
                absolute_timeout=None,
                save_every_request=True,
                renew_interval=60,
                rotate_on_owner_change=True,
                detect_nested_changes=True,
            ),
            clients=2,
            rounds=(
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(Set(key="a", value=[300, 301]),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(Get(key="a"),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(Append(key="a", item=100),),
                            touch=True,
                            status=200,
                            delays=((3, 8),),
                            fault=None,
                            old=None,
                        ),
                        Request(
                            client=0,
                            ops=(Append(key="a", item=100),),
                            touch=True,
                            status=200,
                            delays=((3, 8),),
                            fault=None,
                            old=None,
                        ),
                        Request(
                            client=0,
                            ops=(Append(key="a", item=100),),
                            touch=True,
                            status=200,
                            delays=((3, 8),),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                        Request(
                            client=0,
                            ops=(Set(key="a", value=0),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=0,
                        ),
                        Request(
                            client=0,
                            ops=(SetExpiry(kind="int", seconds=7200),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=(1, "after"),
                            old=None,
                        ),
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
            ),
            olds=(
                Old(kind="starlette", data=(("a", 0),), holders=(0, 1)),
                Old(kind="starlette", data=(("a", 0),), holders=()),
            ),
        ),
    ),
    "explicit_save_then_a_rolling_client": (
        "the same-second explicit save, on PostgreSQL first (postgres, 517a7bb)",
        Program(
            options=Options(
                max_age=3600,
                absolute_timeout=None,
                save_every_request=True,
                renew_interval=60,
                rotate_on_owner_change=True,
                detect_nested_changes=True,
            ),
            clients=1,
            rounds=(
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(Set(key="a", value=0),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=5,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=61,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=False,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                        Request(
                            client=0,
                            ops=(SetExpiry(kind="int", seconds=7200),),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=(1, "after"),
                            old=None,
                        ),
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                    ),
                    outage=None,
                ),
            ),
            olds=(),
        ),
    ),
    "save_after_K_was_re_created": (
        "K loaded, rotated away, re-created, saved: writes by key (postgres, 517a7bb)",
        Program(
            options=Options(
                max_age=3600,
                absolute_timeout=None,
                save_every_request=False,
                renew_interval=0,
                rotate_on_owner_change=True,
                detect_nested_changes=True,
            ),
            clients=1,
            rounds=(
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(Set(key="a", value=0), Tick(seconds=1)),
                            touch=True,
                            status=200,
                            delays=((3, 4),),
                            fault=None,
                            old=0,
                        ),
                        Request(
                            client=0,
                            ops=(CycleKey(),),
                            touch=True,
                            status=200,
                            delays=((3, 2),),
                            fault=None,
                            old=0,
                        ),
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
            ),
            olds=(Old(kind="starlette", data=(("a", 0),), holders=(0,)),),
        ),
    ),
    "K_cookie_after_K_was_emptied_and_re_created": (
        "our cookie naming K after K was emptied and re-created (postgres, 517a7bb)",
        Program(
            options=Options(
                max_age=3600,
                absolute_timeout=None,
                save_every_request=False,
                renew_interval=0,
                rotate_on_owner_change=True,
                detect_nested_changes=True,
            ),
            clients=1,
            rounds=(
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=((1, 2),),
                            fault=None,
                            old=0,
                        ),
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=((1, 1), (1, 1)),
                            fault=None,
                            old=0,
                        ),
                        Request(
                            client=0,
                            ops=(Clear(), Get(key="a"), Save(), Later(key="a", item=1)),
                            touch=True,
                            status=500,
                            delays=((1, 1), (1, 1)),
                            fault=None,
                            old=0,
                        ),
                        Request(
                            client=0, ops=(), touch=True, status=500, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
            ),
            olds=(Old(kind="starlette", data=(("a", 0),), holders=(0,)),),
        ),
    ),
    "K_cookie_after_K_was_rotated_and_re_created": (
        "our cookie naming K after K was rotated away and re-created (postgres, 517a7bb)",
        Program(
            options=Options(
                max_age=3600,
                absolute_timeout=None,
                save_every_request=False,
                renew_interval=0,
                rotate_on_owner_change=True,
                detect_nested_changes=True,
            ),
            clients=2,
            rounds=(
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=((1, 1), (1, 1)),
                            fault=None,
                            old=1,
                        ),
                        Request(
                            client=1,
                            ops=(CycleKey(),),
                            touch=True,
                            status=200,
                            delays=((1, 1), (1, 1)),
                            fault=None,
                            old=1,
                        ),
                        Request(
                            client=0, ops=(), touch=True, status=500, delays=(), fault=None, old=1
                        ),
                    ),
                    outage=None,
                ),
                Round(
                    pause=0,
                    requests=(
                        Request(
                            client=0,
                            ops=(),
                            touch=True,
                            status=200,
                            delays=(),
                            fault=None,
                            old=None,
                        ),
                        Request(
                            client=0, ops=(), touch=True, status=200, delays=(), fault=None, old=0
                        ),
                    ),
                    outage=None,
                ),
            ),
            olds=(
                Old(kind="starlette", data=(("a", 0),), holders=(0,)),
                Old(kind="starlette", data=(("a", 0),), holders=(0, 1)),
            ),
        ),
    ),
}


@pytest.fixture
def server_run(
    store: Store, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[ModelRun]:
    """These programs need a server store (concurrent requests of one client, keys)."""
    gate_store(store)
    yield ModelRun(store, clock, str(request.node.callspec.params.get("store")))


@pytest.mark.parametrize("name", FOUND)
async def test_a_program_that_once_diverged_now_agrees_with_the_model(
    server_run: ModelRun, name: str
) -> None:
    await server_run.check(FOUND[name][1])

"""Property-based fuzzing of the session cookie through real HTTP (security.md 2.2, 2.6, 2.7).

Every hostile ``Cookie`` header must give a status below 500, a fresh empty session, no
``Set-Cookie``, and, when no value carries a valid signature, no store lookup at all.

The number of examples per store comes from ``FUZZ_EXAMPLES`` (200 by default, so the
normal run stays fast); ``make fuzz`` runs 10,000 per store.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from asgi_sessions import Store
from asgi_sessions.cookies import Signer, cookie_values
from tests.support import StoreSpy, app_with, client_for

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))

# The suite's 120 s per test is for the default run; a long fuzz gets time in proportion.
pytestmark = pytest.mark.timeout(max(120, EXAMPLES // 20))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
    database=None,
)

OTHER_SECRET = "another-secret-nobody-configured-1234567"


async def _peek(session: Any, request: Any) -> dict[str, Any]:
    return {"data": session.copy(), "key": session.session_key}


async def _login(session: Any, request: Any) -> dict[str, Any]:
    session["user"] = "alice"
    return {"ok": True}


class Target:
    """An app over one store, with one genuine session whose cookie the fuzzer mutates."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.app = app_with(store, {"peek": _peek, "login": _login})
        self.valid: str = ""
        self.spy: StoreSpy | None = None

    async def start(self, client: httpx.AsyncClient) -> None:
        response = await client.post("/login")
        assert response.status_code == 200
        self.valid = response.cookies["session"]
        # A valid cookie loads its session: proof that the fuzz cases below could succeed.
        check = await client.get("/peek", headers={"cookie": f"session={self.valid}"})
        assert check.json()["data"] == {"user": "alice"}
        client.cookies.clear()
        self.spy = StoreSpy(self.store)


def _signed_by(secret: str, payload: str) -> str:
    return Signer([secret], salt="asgi_sessions.cookie").sign(payload)


# -- mutations of the genuine cookie ----------------------------------------------------


@st.composite
def hostile_value(draw: st.DrawFn, valid: str) -> bytes:
    """A cookie value that must never verify, derived from ``valid`` or not."""
    raw = valid.encode()
    kind = draw(
        st.sampled_from(
            [
                "random",
                "truncate",
                "bitflip",
                "append",
                "prepend",
                "other_secret",
                "huge",
                "unicode",
                "empty",
                "forged_payload",
            ]
        )
    )
    if kind == "random":
        value = draw(st.binary(max_size=300))
    elif kind == "truncate":
        value = raw[: draw(st.integers(0, len(raw) - 1))]
    elif kind == "bitflip":
        index = draw(st.integers(0, len(raw) - 1))
        bit = draw(st.integers(0, 7))
        value = raw[:index] + bytes([raw[index] ^ (1 << bit)]) + raw[index + 1 :]
    elif kind == "append":
        value = raw + draw(st.binary(min_size=1, max_size=100).filter(lambda b: b.strip(b" \t")))
    elif kind == "prepend":
        value = draw(st.binary(min_size=1, max_size=100).filter(lambda b: b.strip(b" \t"))) + raw
    elif kind == "other_secret":
        payload = draw(st.sampled_from([valid.rpartition(".")[0], draw(st.text(max_size=60))]))
        value = _signed_by(OTHER_SECRET, payload).encode("utf-8")
    elif kind == "huge":
        size = draw(st.integers(8 * 1024 + 1, 20 * 1024))
        filler = draw(st.sampled_from([b"A", b".", b"x.", raw]))
        value = (filler * (size // len(filler) + 1))[:size]
    elif kind == "unicode":
        value = draw(st.text(min_size=1, max_size=80)).encode("utf-8") + raw[-10:]
    elif kind == "empty":
        value = b""
    else:
        # A valid-looking payload with a signature borrowed from the genuine cookie.
        signature = valid.rpartition(".")[2]
        value = draw(st.text(alphabet="abcdefABCDEF0123456789-_", max_size=60)).encode()
        value += b"." + signature.encode()
    # A value that still reads as the genuine cookie (garbage after a ';' is another
    # cookie; SP/HTAB are trimmed) is not hostile: spoil it.
    if value.split(b";")[0].strip(b" \t") == raw:
        value = b"!" + value
    return value


def _cookie_header(value: bytes, extra: bytes) -> bytes:
    return b"session=" + value + extra


def _carries(header: bytes, valid: str) -> bool:
    """Whether ``header`` still sends the genuine cookie (``x; session=<valid>``, say)."""
    return valid in cookie_values([(b"cookie", header)], b"session")


async def _assert_fresh_without_lookup(target: Target, client: httpx.AsyncClient, header: bytes):
    assert target.spy is not None
    target.spy.calls.clear()
    response = await client.get("/peek", headers=[(b"cookie", header)])
    assert response.status_code < 500, response.text
    assert response.status_code == 200
    assert response.json() == {"data": {}, "key": None}
    assert "set-cookie" not in response.headers
    assert target.spy.calls == {}, (header[:200], dict(target.spy.calls))


_targets: weakref.WeakKeyDictionary[Store, Target] = weakref.WeakKeyDictionary()


def _target(store: Store) -> Target:
    """The store's target, made once per test (hypothesis reuses the fixture)."""
    target = _targets.get(store)
    if target is None:
        target = _targets[store] = Target(store)
    return target


@FUZZ
@given(data=st.data())
async def test_a_hostile_session_cookie_gives_a_fresh_session_without_any_store_lookup(
    any_store: Store, data: st.DataObject
) -> None:
    target = _target(any_store)
    async with client_for(target.app) as client:
        if target.spy is None:
            await target.start(client)
        value = data.draw(hostile_value(target.valid), label="value")
        extra = data.draw(st.sampled_from([b"", b"; other=1", b";", b"; session="]), label="extra")
        header = _cookie_header(value, extra)
        assume(not _carries(header, target.valid))
        await _assert_fresh_without_lookup(target, client, header)


@FUZZ
@given(header=st.binary(max_size=2000))
async def test_any_cookie_header_at_all_never_fails_and_never_adopts_a_key(
    any_store: Store, header: bytes
) -> None:
    target = _target(any_store)
    async with client_for(target.app) as client:
        if target.spy is None:
            await target.start(client)
        assume(not _carries(header, target.valid))
        await _assert_fresh_without_lookup(target, client, header)

"""CookieStore (issue 5): the session data travels in a signed cookie, through real HTTP.

The shared write-policy suite already runs on this store (``any_store``); this file covers
what only a cookie store has: the 4096-byte limit, compression, the order of checks on a
cookie, expiry carried in the cookie, encryption and the things it cannot do.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
import sys
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from asgi_sessions import (
    MissingDependency,
    SessionError,
    SessionMiddleware,
    SessionTooLarge,
    StoreCapabilityError,
    store_from_url,
)
from asgi_sessions.stores import cookie as cookie_module
from asgi_sessions.stores.cookie import CookieStore
from tests.clock import FakeClock
from tests.support import SECRET, app_with, client_for, cookie_value, sent

OLD_SECRET = "the-previous-secret-key-0000000000000"
MAX_AGE = 3600
ALPHABET = "".join(c for c in string.printable[:94] if c not in '"\\')


def random_text(length: int, seed: int = 5) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(ALPHABET) for _ in range(length))


async def fill(request: Request) -> Response:
    session = await request.state.session
    session.update(await request.json())
    return JSONResponse(dict(session))


async def read(request: Request) -> Response:
    return JSONResponse(dict(await request.state.session))


async def set_from_query(request: Request) -> Response:
    session = await request.state.session
    session.update(request.query_params)
    return JSONResponse(dict(session))


ROUTES = [
    Route("/fill", fill, methods=["POST"]),
    Route("/read", read),
    Route("/set", set_from_query),
]


def cookie_app(store: CookieStore, **options: Any) -> SessionMiddleware:
    """Our middleware around a small Starlette app; kept so tests can use its signer."""
    options.setdefault("secret_key", SECRET)
    options.setdefault("max_age", MAX_AGE)
    return SessionMiddleware(Starlette(routes=ROUTES), store=store, **options)


def full_app(store: CookieStore, **options: Any) -> Starlette:
    """The middleware inside a full Starlette stack (its error middleware outermost)."""
    handlers = {"fill": _fill_handler, "read": _read_handler}
    options.setdefault("max_age", MAX_AGE)
    return app_with(store, handlers, **options)


async def _fill_handler(session: Any, request: Request) -> Any:
    session.update(await request.json())
    return dict(session)


async def _read_handler(session: Any, request: Request) -> Any:
    return dict(session)


def body_of(value: str) -> str:
    """The ``<kind><base64>`` part of a cookie value."""
    return value.split(".")[0]


def decoded_body(value: str) -> bytes:
    body = body_of(value)[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def signed_cookie(middleware: SessionMiddleware, kind: str, raw: bytes, clock: FakeClock) -> str:
    """A cookie validly signed with the middleware's own signer, whatever its body."""
    body = kind + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    inner = f"{body}.{int(clock()):x}.{int(clock() + MAX_AGE):x}"
    return middleware.config.signer.sign(inner)


def document(data: Any, clock: FakeClock) -> bytes:
    return json.dumps({"d": data, "m": {"c": clock(), "x": None, "o": None}}).encode()


@pytest.fixture
def store(clock: FakeClock) -> CookieStore:
    return CookieStore(clock=clock)


# -- the 4096-byte limit ------------------------------------------------------------------


async def _header_size(clock: FakeClock, name: str, blob: str) -> tuple[int, str] | None:
    """Send an old session under cookie ``name``, then add ``blob``: Set-Cookie's byte size
    and the old cookie, or ``None`` if SessionTooLarge was raised."""
    app = full_app(CookieStore(clock=clock), session_cookie=name)
    async with client_for(app) as client:
        old = cookie_value(await client.post("/fill", json={"a": "old"}), name)
        try:
            response = await client.post("/fill", json={"blob": blob}, headers=sent(old, name))
        except SessionTooLarge:
            return None
        return len(response.headers["set-cookie"].encode()), old


async def test_a_set_cookie_of_exactly_4096_bytes_is_sent_and_4097_raises(
    clock: FakeClock,
) -> None:
    # Grow the data until the header is just under the limit, then lengthen the cookie
    # name (one byte at a time; the value does not depend on it) to land on 4096 exactly.
    text = random_text(8000)
    length = 2000
    for _ in range(20):
        measured = await _header_size(clock, "s", text[:length])
        if measured is None:
            length -= 40
            continue
        size = measured[0]
        if 4096 - 30 <= size <= 4096:
            break
        length += max(1, (4096 - 15 - size) * 2 // 3)
    else:
        pytest.fail("could not approach the limit")
    name = "s" * (1 + 4096 - size)
    exact = await _header_size(clock, name, text[:length])
    assert exact is not None and exact[0] == 4096

    longer = name + "s"
    app = full_app(CookieStore(clock=clock), session_cookie=longer)
    async with client_for(app) as client:
        old = cookie_value(await client.post("/fill", json={"a": "old"}), longer)
        with pytest.raises(SessionTooLarge) as raised:
            await client.post("/fill", json={"blob": text[:length]}, headers=sent(old, longer))
        assert isinstance(raised.value, SessionError)
        message = str(raised.value)
        assert "4097 bytes" in message
        assert "4096-byte limit" in message
        assert "server-side store" in message
        # Nothing was half-written: the old cookie still carries the old data.
        response = await client.get("/read", headers=sent(old, longer))
        assert response.json() == {"a": "old"}


async def test_an_oversized_session_answers_500_without_a_set_cookie(store: CookieStore) -> None:
    app = full_app(store)
    async with client_for(app, raise_app_exceptions=False) as client:
        old = cookie_value(await client.post("/fill", json={"a": "old"}))
        response = await client.post("/fill", json={"blob": random_text(6000)}, headers=sent(old))
        assert response.status_code == 500
        assert "set-cookie" not in response.headers
        assert (await client.get("/read", headers=sent(old))).json() == {"a": "old"}


# -- compression ----------------------------------------------------------------------------


async def test_a_session_that_does_not_compress_is_sent_as_plain_json(
    store: CookieStore,
) -> None:
    data = {"token": random_text(300)}
    raw = json.dumps(data, separators=(",", ":")).encode()
    assert len(zlib.compress(raw, 9)) >= len(raw) - 64  # no worthwhile gain
    async with client_for(cookie_app(store)) as client:
        value = cookie_value(await client.post("/fill", json=data))
        assert body_of(value).startswith("j")
        assert json.loads(decoded_body(value))["d"] == data
        assert (await client.get("/read", headers=sent(value))).json() == data


async def test_a_repetitive_session_is_compressed_and_reads_back(store: CookieStore) -> None:
    data = {f"flag_{i}": "enabled" for i in range(200)}
    raw_size = len(json.dumps(data, separators=(",", ":")))
    async with client_for(cookie_app(store)) as client:
        value = cookie_value(await client.post("/fill", json=data))
        assert body_of(value).startswith("z")
        assert len(value) < raw_size / 2
        assert (await client.get("/read", headers=sent(value))).json() == data


# Any text, any length (each base64 padding case), and bodies big enough to compress.
SESSION_DATA = st.dictionaries(
    st.text(  # keys: no NUL (refused on every store)
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"),
        min_size=1,
        max_size=8,
    ),
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=200)
    | st.integers()
    | st.lists(st.sampled_from(["enabled", "x" * 40]), max_size=40),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=SESSION_DATA)
async def test_the_cookie_body_is_base64url_json_as_the_standard_library_reads_and_writes_it(
    clock: FakeClock, data: dict[str, Any]
) -> None:
    # The store codes bodies through binascii and the C scanner directly (for speed); the
    # standard library's own base64url and json are the reference, in both directions.
    app = cookie_app(CookieStore(clock=clock))
    async with client_for(app) as client:
        value = cookie_value(await client.post("/fill", json=data))
        assert re.fullmatch(r"[jz][A-Za-z0-9_-]*", body_of(value))  # base64url, unpadded
        raw = decoded_body(value)
        if body_of(value).startswith("z"):
            raw = zlib.decompress(raw)
        assert json.loads(raw)["d"] == data
        ours = signed_cookie(app, "j", document(data, clock), clock)  # base64's encoder
        assert (await client.get("/read", headers=sent(ours))).json() == data


# -- what is checked, and in which order ------------------------------------------------------


async def test_a_forged_cookie_never_reaches_the_decompressor_or_the_decoder(
    store: CookieStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_decompressobj, real_decode = zlib.decompressobj, cookie_module._decode_json

    def spy_decompressobj(*args: Any) -> Any:
        calls.append("decompressobj")
        return real_decompressobj(*args)

    def spy_decode(text: str) -> Any:
        calls.append("decode")
        return real_decode(text)

    monkeypatch.setattr(zlib, "decompressobj", spy_decompressobj)  # the module cookie.py uses
    monkeypatch.setattr(cookie_module, "_decode_json", spy_decode)
    data = {f"flag_{i}": "enabled" for i in range(200)}
    async with client_for(cookie_app(store)) as client:
        value = cookie_value(await client.post("/fill", json=data))
        assert body_of(value).startswith("z")
        # The spies see a genuine cookie, so they would see a forged one too.
        assert (await client.get("/read", headers=sent(value))).json() == data
        assert calls == ["decompressobj", "decode"]
        calls.clear()
        body, rest = value.split(".", 1)
        forged = body[:-3] + ("AAA" if body[-3:] != "AAA" else "BBB") + "." + rest
        response = await client.get("/read", headers=sent(forged))
        assert response.status_code == 200
        assert response.json() == {}
        assert calls == []


async def test_an_expired_cookie_is_refused_even_when_the_browser_sends_it(
    store: CookieStore, clock: FakeClock
) -> None:
    async with client_for(cookie_app(store)) as client:
        value = cookie_value(await client.get("/set", params={"user": "ada"}))
        clock.advance(MAX_AGE - 1)
        assert (await client.get("/read", headers=sent(value))).json() == {"user": "ada"}
        clock.advance(2)
        response = await client.get("/read", headers=sent(value))
        assert response.json() == {}
        assert "set-cookie" not in response.headers


async def test_a_cookie_issued_in_the_future_is_refused(
    store: CookieStore, clock: FakeClock
) -> None:
    async with client_for(cookie_app(store)) as client:
        value = cookie_value(await client.get("/set", params={"user": "ada"}))
        clock.advance(-3600)  # the cookie was issued an hour from "now"
        assert (await client.get("/read", headers=sent(value))).json() == {}


async def test_a_cookie_with_a_stretched_expiry_is_refused(
    store: CookieStore, clock: FakeClock
) -> None:
    async with client_for(cookie_app(store)) as client:
        value = cookie_value(await client.get("/set", params={"user": "ada"}))
        body, issued, expires, signature = value.split(".")
        stretched = f"{body}.{issued}.{int(expires, 16) + 10**6:x}.{signature}"
        clock.advance(MAX_AGE + 1)
        assert (await client.get("/read", headers=sent(stretched))).json() == {}


async def test_key_rotation_reads_old_cookies_and_signs_with_the_first_secret(
    clock: FakeClock,
) -> None:
    old_app = cookie_app(CookieStore(clock=clock), secret_key=OLD_SECRET)
    rotated = cookie_app(
        CookieStore(clock=clock), secret_key=["new-secret-key-000000000000", OLD_SECRET]
    )
    async with client_for(old_app) as old_client, client_for(rotated) as client:
        old_cookie = cookie_value(await old_client.get("/set", params={"user": "ada"}))
        assert (await client.get("/read", headers=sent(old_cookie))).json() == {"user": "ada"}
        new_cookie = cookie_value(
            await client.get("/set", params={"theme": "dark"}, headers=sent(old_cookie))
        )
        assert (await client.get("/read", headers=sent(new_cookie))).json() == {
            "user": "ada",
            "theme": "dark",
        }
        # Signed with the new secret: the old-only app cannot read it.
        assert (await old_client.get("/read", headers=sent(new_cookie))).json() == {}


# -- encryption -------------------------------------------------------------------------------


async def test_an_encrypted_session_round_trips_and_hides_its_plaintext(
    clock: FakeClock,
) -> None:
    app = cookie_app(CookieStore(encrypt=True, clock=clock))
    secret_word = "correct-horse-battery-staple"
    async with client_for(app) as client:
        value = cookie_value(await client.get("/set", params={"password_hint": secret_word}))
        assert body_of(value).startswith("e")
        assert secret_word not in value
        assert secret_word.encode() not in decoded_body(value)
        assert b"password_hint" not in decoded_body(value)
        response = await client.get("/read", headers=sent(value))
        assert response.json() == {"password_hint": secret_word}


async def test_an_encrypted_cookie_from_the_old_secret_is_read_after_rotation(
    clock: FakeClock,
) -> None:
    old_app = cookie_app(CookieStore(encrypt=True, clock=clock), secret_key=OLD_SECRET)
    rotated = cookie_app(
        CookieStore(encrypt=True, clock=clock),
        secret_key=["new-secret-key-000000000000", OLD_SECRET],
    )
    async with client_for(old_app) as old_client, client_for(rotated) as client:
        old_cookie = cookie_value(await old_client.get("/set", params={"user": "ada"}))
        assert (await client.get("/read", headers=sent(old_cookie))).json() == {"user": "ada"}


async def test_a_tampered_encrypted_cookie_gives_a_fresh_session(clock: FakeClock) -> None:
    app = cookie_app(CookieStore(encrypt=True, clock=clock))
    async with client_for(app) as client:
        value = cookie_value(await client.get("/set", params={"user": "ada"}))
        inner = value.rpartition(".")[0]
        times = inner.split(".", 1)[1]
        sealed = bytearray(decoded_body(value))
        sealed[-1] ^= 1  # flip one bit of the GCM tag
        flipped = "e" + base64.urlsafe_b64encode(bytes(sealed)).rstrip(b"=").decode()
        # Re-signed with the real signer: only AES-GCM's own check stands in the way.
        resigned = app.config.signer.sign(f"{flipped}.{times}")
        response = await client.get("/read", headers=sent(resigned))
        assert response.status_code == 200
        assert response.json() == {}
        unsigned = f"{flipped}.{times}.{value.rpartition('.')[2]}"
        assert (await client.get("/read", headers=sent(unsigned))).json() == {}


async def test_an_encrypted_cookie_is_unreadable_to_a_store_without_encryption(
    clock: FakeClock,
) -> None:
    writer = cookie_app(CookieStore(encrypt=True, clock=clock))
    reader = cookie_app(CookieStore(clock=clock))
    async with client_for(writer) as client, client_for(reader) as other:
        value = cookie_value(await client.get("/set", params={"user": "ada"}))
        assert (await other.get("/read", headers=sent(value))).json() == {}


def test_encryption_without_cryptography_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.ciphers.aead", None)
    for build in (
        lambda: CookieStore(encrypt=True),
        lambda: store_from_url("cookie://", encrypt=True),
    ):
        with pytest.raises(MissingDependency) as raised:
            build()
        assert isinstance(raised.value, ImportError)
        assert "pip install 'asgi-server-sessions[cookie-encryption]'" in str(raised.value)
    assert CookieStore().encrypt is False  # plain cookies need no extra


# -- construction and what it cannot do --------------------------------------------------------


def test_store_from_url_builds_a_cookie_store_with_or_without_encryption() -> None:
    plain = store_from_url("cookie://")
    assert isinstance(plain, CookieStore)
    assert plain.encrypt is False
    assert plain.keeps_data_in_cookie
    encrypted = store_from_url("cookie://", encrypt=True)
    assert isinstance(encrypted, CookieStore)
    assert encrypted.encrypt is True


async def test_listing_and_revoking_explain_what_to_use_instead(store: CookieStore) -> None:
    for call in (
        lambda: store.list_sessions("ada"),
        lambda: store.revoke("ada", "abc"),
        lambda: store.revoke_all("ada"),
    ):
        with pytest.raises(StoreCapabilityError) as raised:
            await call()
        message = str(raised.value)
        assert "SQLiteStore" in message
        assert "RedisStore" in message


async def test_clear_expired_has_nothing_to_remove(store: CookieStore) -> None:
    assert await store.clear_expired() == 0


# -- signed but unreadable bodies ------------------------------------------------------------


async def test_a_signed_decompression_bomb_gives_a_fresh_session(
    store: CookieStore, clock: FakeClock
) -> None:
    app = cookie_app(store)
    bomb = zlib.compress(document({"x": "a" * (200 * 1024)}, clock), 9)
    value = signed_cookie(app, "z", bomb, clock)
    assert len(value) < 4096
    async with client_for(app) as client:
        response = await client.get("/read", headers=sent(value))
        assert response.status_code == 200
        assert response.json() == {}
        assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        pytest.param("j", b"not json at all", id="not-json"),
        pytest.param("j", b"\xff\xfe\x00", id="not-utf8"),
        pytest.param("j", b"[1, 2, 3]", id="a-list"),
        pytest.param("j", b'{"d": [1, 2], "m": {"c": 1}}', id="data-not-a-dict"),
        pytest.param("j", b'{"d": {"a": 1}, "m": "meta"}', id="meta-not-a-dict"),
        pytest.param("j", b'{"d": {"a": 1}, "m": {"c": 1, "x": 5}}', id="expiry-not-a-str"),
        pytest.param("j", b'{"d": {"a": 1}}', id="no-meta"),
        pytest.param("z", zlib.compress(b"[" * 50_000), id="nested-too-deep"),
        pytest.param("z", b"definitely not zlib", id="not-zlib"),
        pytest.param("z", zlib.compress(b'{"d":{},"m":{"c":1}}')[:-4], id="truncated-zlib"),
        pytest.param("e", b"\x00" * 40, id="encrypted-for-nobody"),
        pytest.param("q", b"{}", id="unknown-kind"),
    ],
)
async def test_a_signed_body_that_is_not_a_session_gives_a_fresh_session(
    store: CookieStore, clock: FakeClock, kind: str, payload: bytes
) -> None:
    app = cookie_app(store)
    value = signed_cookie(app, kind, payload, clock)
    async with client_for(app) as client:
        response = await client.get("/read", headers=sent(value))
        assert response.status_code == 200
        assert response.json() == {}


async def test_a_signed_well_formed_body_is_read(store: CookieStore, clock: FakeClock) -> None:
    # The control for the test above: the same construction with a valid document.
    app = cookie_app(store)
    value = signed_cookie(app, "j", document({"a": 1}, clock), clock)
    async with client_for(app) as client:
        assert (await client.get("/read", headers=sent(value))).json() == {"a": 1}


# -- outside views -----------------------------------------------------------------------------


async def test_get_of_a_cookie_key_returns_the_decoded_record(
    store: CookieStore, clock: FakeClock
) -> None:
    async with client_for(cookie_app(store)) as client:
        value = cookie_value(await client.get("/set", params={"user": "ada", "theme": "dark"}))
    key = value.rpartition(".")[0]
    record = await store.get(key)
    assert record is not None
    assert record.session_key == key
    assert record.get_decoded() == {"user": "ada", "theme": "dark"}
    assert record.expire_date.timestamp() == int(clock() + MAX_AGE)
    assert record.expire_date.tzinfo is not None
    clock.advance(MAX_AGE + 1)
    assert await store.get(key) is None


async def test_the_cookie_store_needs_the_middleware_secret_before_encrypting() -> None:
    from asgi_sessions import ImproperlyConfigured
    from asgi_sessions.stores.base import SessionWrite

    change = SessionWrite(
        set={}, deleted=frozenset(), replace=True, create=True, now=1e9,
        default_expires_at=2e9, expires_cap=None, created_at=1e9, full_data={"a": 1},
    )  # fmt: skip
    with pytest.raises(ImproperlyConfigured, match="secret_key"):
        await CookieStore(encrypt=True).save("new", change)


async def test_a_value_json_cannot_encode_is_refused_and_nothing_is_sent(
    store: CookieStore,
) -> None:
    async def put_nan(request: Request) -> Response:
        session = await request.state.session
        session["n"] = float("nan")
        return JSONResponse({})

    app = SessionMiddleware(
        Starlette(routes=[Route("/nan", put_nan)]), secret_key=SECRET, store=store
    )
    async with client_for(app) as client:
        with pytest.raises(TypeError, match="'n'"):
            await client.get("/nan")


def test_the_store_repr_says_whether_it_encrypts() -> None:
    assert repr(CookieStore()) == "CookieStore(encrypt=False)"

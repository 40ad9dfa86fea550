"""CookieStore: the session data travels in the signed cookie itself; nothing server-side.

Cookie value layout (all URL-safe ASCII)::

    <kind><base64 body>.<issued, hex seconds>.<expires, hex seconds>.<HMAC-SHA256>

``kind`` is ``j`` (JSON), ``z`` (zlib-compressed JSON, used only when smaller) or ``e``
(AES-GCM encrypted JSON). The signature covers everything before it and is checked
before the body is decompressed, decrypted or decoded; the times are checked next, so a
cookie kept past its expiry (or issued in the future) is refused even though a browser
or an attacker still sends it. A validly signed cookie past its expiry loads as nothing
but is reported (the ``expired`` event, with the owner its body names if it can still be
read); a forged one is not.

Limits, by design: a cookie session cannot be revoked before it expires (logging out
only deletes the browser's copy), and two concurrent requests cannot merge their
changes: the last response's cookie wins. Encrypted bodies are not compressed, so that
the cookie's length says nothing about how well its contents compress.
"""

from __future__ import annotations

import binascii
import os
import time
import zlib
from typing import TYPE_CHECKING

from ..cookies import Signer, b64url_decode, b64url_encode
from ..errors import ImproperlyConfigured, MissingDependency, StoreCapabilityError
from ..events import read_found_expired
from ..expiry import resolve_expires_at
from ..serializers import JSONSerializer, compact_json_encoder
from .base import Clock, Saved, SessionWrite, Store, StoredSession, StoreStats

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["CookieStore"]

# Refuse to inflate more than this: a small signed cookie must not become a memory bomb
# even if a secret leaked.
_MAX_DECODED = 64 * 1024
_ENCRYPTION_PURPOSE = b"asgi_sessions.cookie-store.aes-gcm"
_NONCE_BYTES = 12
# Servers behind one load balancer disagree on the time by a little; a cookie issued
# further in the future than this was not issued by a server with a sane clock.
_CLOCK_SKEW = 60
# Compression is for fitting big sessions under the 4096-byte limit. Below this size the
# cookie is nowhere near it, and a zlib round trip would cost more than the few bytes saved.
_MIN_COMPRESSIBLE = 512
# Level 6 compresses short JSON within a few bytes of level 9, in less time.
_ZLIB_LEVEL = 6

_encode_json = compact_json_encoder()
# Compact JSON as the store writes it: the C scanner, without JSONDecoder.decode's two
# whitespace passes (a body we signed has none around it).
_decode_json = JSONSerializer().loads

# What decoding a signed body can raise when it is not one this version can read.
_UNREADABLE = (
    ValueError,  # bad JSON, UTF-8, base64 padding, or a body over _MAX_DECODED
    KeyError,
    TypeError,
    OverflowError,
    RecursionError,  # deeply nested JSON
    binascii.Error,
    zlib.error,
)


def _b64encode(raw: bytes) -> str:
    return b64url_encode(raw).decode()


class CookieStore(Store):
    """Keeps the whole session in the cookie, signed with the middleware's ``secret_key``.

    Args:
        encrypt: also encrypt the data with AES-GCM (needs the ``cryptography`` package:
            ``pip install 'asgi-server-sessions[cookie-encryption]'``); otherwise the client can
            read, but not change, what is in its session.
    """

    keeps_data_in_cookie = True

    def __init__(self, *, encrypt: bool = False, clock: Clock = time.time) -> None:
        super().__init__(clock=clock)
        self.encrypt = encrypt
        self._signer: Signer | None = None
        self._ciphers: list[AESGCM] = []
        self._invalid_tag: type[Exception] = Exception
        if encrypt:
            try:
                from cryptography.exceptions import InvalidTag
                from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: F401
            except ImportError:
                raise MissingDependency("cookie-encryption", "cryptography") from None
            self._invalid_tag = InvalidTag

    def bind(self, signer: Signer) -> None:
        """Keep the middleware's signer; with ``encrypt=True`` derive one AES key per secret."""
        self._signer = signer
        if self.encrypt:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            # One AES key per secret, derived for this purpose only; the first encrypts.
            self._ciphers = [AESGCM(key) for key in signer.derive(_ENCRYPTION_PURPOSE)]

    def __repr__(self) -> str:
        return f"CookieStore(encrypt={self.encrypt!r})"

    # -- the cookie ------------------------------------------------------------------

    def verify_cookie(self, value: str, signer: Signer) -> tuple[str, bool] | None:
        """The signed ``body.issued.expires`` if the signature holds and it was not issued
        in the future.

        One past its expiry passes, as a server store's key to an expired record does:
        :meth:`load` refuses it, and reports it expired.
        """
        verified = signer.verify(value)
        if verified is None or self._times(verified[0], self.clock()) is None:
            return None
        return verified

    def reissue_key(self, session_key: str) -> str:
        """The same payload; an encrypted body is sealed again with the current secret's key.

        Issue and expiry times are kept, so signing it again never extends the session.
        """
        if not self.encrypt:
            return session_key
        body, issued, expires = session_key.rsplit(".", 2)
        return f"{self._seal(self._open(body))}.{issued}.{expires}"

    def _times(self, key: str, now: float) -> tuple[str, int, int] | None:
        """``(body, issued, expires)`` of a signed payload; ``None`` if the times cannot be
        read or it was issued in the future."""
        try:
            body, issued, expires = key.rsplit(".", 2)
            issued_at, expires_at = int(issued, 16), int(expires, 16)
        except ValueError:
            return None
        if issued_at > now + _CLOCK_SKEW:
            return None
        return body, issued_at, expires_at

    def encode_cookie(self, session_key: str, signer: Signer) -> str:
        """Sign the whole ``body.issued.expires``."""
        return signer.sign(session_key)

    # -- loading and saving ----------------------------------------------------------

    async def load(self, session_key: str) -> StoredSession | None:
        """Decode a verified cookie's data; ``None`` if it expired or cannot be read.

        Expired: reported (``read_found_expired``) with the owner its body names, on
        every load of it (nothing server-side remembers that it was seen).
        """
        now = self.clock()
        times = self._times(session_key, now)
        if times is None:
            return None
        body, issued, expires = times
        if expires <= now:
            # The signature vouches for the body as much as for the times: its owner is
            # the one this server wrote (None if the body cannot be read any more).
            read_found_expired(self._owner_of(body))
            return None
        try:
            document = _decode_json(self._open(body).decode())
            data = document["d"]
            meta = document["m"]
            if not isinstance(data, dict) or not isinstance(meta, dict):
                return None
            expiry, owner = meta.get("x"), meta.get("o")
            if not isinstance(expiry, str | None) or not isinstance(owner, str | None):
                return None
            return StoredSession(
                data={},
                decoded=data,
                expires_at=float(expires),
                created_at=float(meta["c"]),
                updated_at=float(issued),
                expiry=expiry,
                owner=owner,
            )
        except _UNREADABLE:
            # Signed by us but unreadable (an older format, say): a fresh session.
            return None

    def _owner_of(self, body: str) -> str | None:
        """The owner a signed body names, if it can be read (only its expired load asks)."""
        try:
            meta = _decode_json(self._open(body).decode())["m"]
            owner = meta.get("o") if isinstance(meta, dict) else None
        except _UNREADABLE:
            return None
        return owner if isinstance(owner, str) else None

    async def save(self, session_key: str, change: SessionWrite) -> Saved:
        """Return the new cookie payload ``body.issued.expires`` (the middleware signs it).

        The cookie is the whole record: every key, the owner and the expiry setting are
        written as the request has them (concurrent requests do not merge: the last
        response's cookie wins).
        """
        expires_at = resolve_expires_at(
            change.expiry, change.now, change.default_expires_at, change.expires_cap
        )
        full = change.full_data
        # The session is a dict: its items copied in C, not read key by key through its
        # own methods (dict() and dict.copy() would: it overrides __iter__ and keys()).
        data = dict(dict.items(full)) if isinstance(full, dict) else dict(full)
        if not data:
            return Saved("", False, expires_at, change.expiry)
        document = {"d": data, "m": {"c": change.created_at, "x": change.expiry, "o": change.owner}}
        try:
            text = _encode_json(document)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"The session cannot be stored in a cookie: {exc}.") from exc
        body = self._seal(text.encode())
        # The exact 4096-byte check happens where the whole Set-Cookie header is known
        # (the middleware), so it counts the name and attributes as browsers do.
        payload = f"{body}.{int(change.now):x}.{int(expires_at):x}"
        return Saved(payload, True, expires_at, change.expiry)

    async def create(self, change: SessionWrite) -> Saved:
        """A new cookie session: the payload is the key."""
        return await self.save("", change)

    async def rotate(self, session_key: str, change: SessionWrite) -> Saved:
        """A new payload; the old cookie cannot be revoked (it stays valid until it expires)."""
        return await self.save(session_key, change)

    async def delete(self, session_key: str) -> None:
        """Nothing to delete server-side: the middleware removes the browser's cookie."""

    async def purge_expired(self) -> int:
        """Expired cookies are refused when read; there is nothing to purge."""
        return 0

    async def stats(self) -> StoreStats:
        """Nothing to count: every session lives in its own browser."""
        raise StoreCapabilityError(
            "CookieStore keeps no server-side record of sessions, so it has no statistics "
            "to report: each session lives only in its browser's cookie."
        )

    def _no_owner_index(self) -> StoreCapabilityError:
        return StoreCapabilityError(
            "CookieStore keeps no server-side record of sessions, so it cannot list or revoke "
            "them: a cookie stays valid until it expires. Use SQLiteStore, RedisStore or "
            "MemoryStore for 'log out everywhere', or set a short max_age."
        )

    # -- body encoding ---------------------------------------------------------------

    def _seal(self, raw: bytes) -> str:
        if self.encrypt:
            if not self._ciphers:
                raise ImproperlyConfigured(
                    "CookieStore encrypts with a key derived from the middleware's "
                    "secret_key: pass it as SessionMiddleware(store=CookieStore(encrypt=True), "
                    "secret_key=...) before use."
                )
            nonce = os.urandom(_NONCE_BYTES)
            return "e" + _b64encode(nonce + self._ciphers[0].encrypt(nonce, raw, None))
        if len(raw) >= _MIN_COMPRESSIBLE:
            compressed = zlib.compress(raw, _ZLIB_LEVEL)
            if len(compressed) < len(raw):
                return "z" + _b64encode(compressed)
        return "j" + _b64encode(raw)

    def _open(self, body: str) -> bytes:
        kind, encoded = body[:1], b64url_decode(body[1:])
        if kind == "j":
            return encoded
        if kind == "z":
            inflater = zlib.decompressobj()
            raw = inflater.decompress(encoded, _MAX_DECODED)
            if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
                raise ValueError("compressed session too large or malformed")
            return raw
        if kind == "e":
            nonce, sealed = encoded[:_NONCE_BYTES], encoded[_NONCE_BYTES:]
            for cipher in self._ciphers:
                try:
                    return cipher.decrypt(nonce, sealed, None)
                except self._invalid_tag:
                    continue
        raise ValueError("unreadable session cookie body")

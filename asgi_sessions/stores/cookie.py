"""CookieStore: the session data travels in the signed cookie itself; nothing server-side.

Cookie value layout (all URL-safe ASCII)::

    <kind><base64 body>.<issued, hex seconds>.<expires, hex seconds>.<HMAC-SHA256>

``kind`` is ``j`` (JSON), ``z`` (zlib-compressed JSON, used only when smaller) or ``e``
(AES-GCM encrypted JSON). The signature covers everything before it and is checked
before the body is decompressed, decrypted or decoded; the expiry is checked next, so a
cookie kept past its time is refused even though a browser or an attacker still sends it.

Limits, by design: a cookie session cannot be revoked before it expires (logging out
only deletes the browser's copy), and two concurrent requests cannot merge their
changes: the last response's cookie wins.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
import zlib
from typing import Any

from ..cookies import Signer
from ..errors import MissingDependency
from .base import Clock, SessionWrite, Store, StoredSession

__all__ = ["CookieStore"]

# Refuse to inflate more than this: a small signed cookie must not become a memory bomb
# even if a secret leaked.
_MAX_DECODED = 64 * 1024
_ENCRYPTION_PURPOSE = b"asgi_sessions.cookie-store.aes-gcm"
_NONCE_BYTES = 12


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CookieStore(Store):
    """Keeps the whole session in the cookie, signed with the middleware's ``secret_key``.

    Args:
        encrypt: also encrypt the data with AES-GCM (needs the ``cryptography`` package:
            ``pip install 'asgi-sessions[cookie-encryption]'``); otherwise the client can
            read, but not change, what is in its session.
    """

    keeps_data_in_cookie = True

    def __init__(self, *, encrypt: bool = False, clock: Clock = time.time) -> None:
        super().__init__(clock=clock)
        self.encrypt = encrypt
        self._signer: Signer | None = None
        self._ciphers: list[Any] = []
        if encrypt:
            try:
                from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: F401
            except ImportError:
                raise MissingDependency("cookie-encryption", "cryptography") from None

    def bind(self, signer: Signer) -> None:
        self._signer = signer
        if self.encrypt:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            # One AES key per secret, derived for this purpose only; the first encrypts.
            self._ciphers = [AESGCM(key) for key in signer.derive(_ENCRYPTION_PURPOSE)]

    def _bound(self) -> Signer:
        if self._signer is None:
            from ..errors import ImproperlyConfigured

            raise ImproperlyConfigured(
                "CookieStore signs with the middleware's secret_key: pass it to "
                "SessionMiddleware(store=CookieStore(), secret_key=...) before use."
            )
        return self._signer

    # -- the cookie ------------------------------------------------------------------

    def decode_cookie(self, value: str, signer: Signer) -> str | None:
        inner = signer.unsign(value)
        if inner is None:
            return None
        try:
            _, _, expires = inner.rsplit(".", 2)
            expired = int(expires, 16) <= self.clock()
        except ValueError:
            return None
        return None if expired else inner

    def encode_cookie(self, session_key: str, signer: Signer) -> str:
        return signer.sign(session_key)

    # -- loading and saving ----------------------------------------------------------

    async def load(self, session_key: str) -> StoredSession | None:
        try:
            body, issued, expires = session_key.rsplit(".", 2)
            document = json.loads(self._open(body))
            expires_at = float(int(expires, 16))
            data = document["d"]
            meta = document["m"]
            if not isinstance(data, dict):
                return None
            return StoredSession(
                data={},
                decoded=data,
                expires_at=expires_at,
                created_at=float(meta["c"]),
                updated_at=float(int(issued, 16)),
                expiry=meta.get("x"),
                owner=meta.get("o"),
            )
        except (ValueError, KeyError, TypeError, binascii.Error, zlib.error):
            # Signed by us but unreadable (an older format, say): a fresh session.
            return None

    async def save(self, session_key: str, change: SessionWrite) -> str:
        document = {
            "d": dict(change.full_data),
            "m": {"c": change.created_at, "x": change.expiry, "o": change.owner},
        }
        try:
            text = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"The session cannot be stored in a cookie: {exc}.") from exc
        body = self._seal(text.encode())
        # The exact 4096-byte check happens where the whole Set-Cookie header is known
        # (the middleware), so it counts the name and attributes as browsers do.
        return f"{body}.{int(change.updated_at):x}.{int(change.expires_at):x}"

    async def delete(self, session_key: str) -> None:
        """Nothing to delete server-side: the middleware removes the browser's cookie."""

    async def purge_expired(self) -> int:
        """Expired cookies are refused when read; there is nothing to purge."""
        return 0

    # -- body encoding ---------------------------------------------------------------

    def _seal(self, raw: bytes) -> str:
        if self.encrypt:
            self._bound()
            nonce = os.urandom(_NONCE_BYTES)
            return "e" + _b64encode(nonce + self._ciphers[0].encrypt(nonce, raw, None))
        compressed = zlib.compress(raw, 9)
        if len(compressed) < len(raw):
            return "z" + _b64encode(compressed)
        return "j" + _b64encode(raw)

    def _open(self, body: str) -> bytes:
        kind, encoded = body[:1], _b64decode(body[1:])
        if kind == "j":
            return encoded
        if kind == "z":
            inflater = zlib.decompressobj()
            raw = inflater.decompress(encoded, _MAX_DECODED)
            if inflater.unconsumed_tail:
                raise ValueError("compressed session too large")
            return raw
        if kind == "e" and self._ciphers:
            from cryptography.exceptions import InvalidTag

            nonce, sealed = encoded[:_NONCE_BYTES], encoded[_NONCE_BYTES:]
            for cipher in self._ciphers:
                try:
                    return bytes(cipher.decrypt(nonce, sealed, None))
                except InvalidTag:
                    continue
        raise ValueError("unreadable session cookie body")

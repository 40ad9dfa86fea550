"""Where a session lives on a Redis Cluster: a slot tag minted into its key.

A Redis Cluster runs a script only if every key it touches hashes to one slot, and the
save script touches two keys: the session's hash and its owner's index (the sorted set
behind "log out everywhere"). Two sound designs keep that legal:

(a) ordered commands and a self-expiring index: the session and the index live in
    their own slots and a save updates them in turn (index first, so the index is
    always a superset);
(b) co-location: the key of an owned session carries a slot tag derived from an HMAC
    of its owner, so the session and its owner's index share a slot and one atomic
    script keeps them exact.

We chose (b). Under (a) every save that extends a session's life has to extend its
index entry too, in another slot: a second command per write (or an index that lags
and lets ``revoke_all`` miss a live session); the index turns into an upper bound that
listings must check session by session; and a crash between the two commands leaves an
entry or a session behind. Under (b) nothing of the single-server design changes: the
same scripts keep the index exact on every save and expiry, ``list_sessions`` and
``revoke_all`` are one script in one slot, and no entry outlives its session. The
price is paid only when the owner changes, which is a login, where the key rotates
anyway (``cycle_key()``, or the middleware's rotation on an owner change): the session
moves to its new owner's slot, one command more than a rotation inside one slot.
Measured (``python -m bench cluster --figures round-trips,latency``): a request
costs the same round trips on a cluster as on one server (untouched 0, read 1, write 2,
first write 1) except a login (3 instead of 2), and a load or a save takes as long.

The rules:

- A key is ``tag + secrets.token_urlsafe(32)``: 4 tag characters (base64url), then the
  256 random bits the contract promises. Its hash lives at ``prefix{tag}<sha256(key)>``,
  so the slot is read off the key text and a load is still one command.
- An owned session's tag is ``HMAC(slot key, owner)``; its owner's index is
  ``prefix{tag}owner:<owner>``. An ownerless session gets a random tag, so ownerless
  sessions spread over every slot as well. 4 characters give 16.7 million tags for the
  16,384 slots: 100,000 sessions cover about 16,350 slots, 100,000 sessions of 10,000
  owners about 7,500 (``python -m bench cluster --figures spread``).
  There is no namespace-wide tag, and a prefix with a brace is refused.
- The tag does not tell who the owner is: without the slot key nobody can compute an
  owner's tag. But it is the same on every session of one owner, so the cookies of one
  user (two devices, or before and after a logout and a new login) are linkable to each
  other by whoever sees them, though not to the user (two owners share a tag once in
  16.7 million). An ownerless session's tag is random and links nothing. Unlinkable
  keys at the same round trips would need the tag masked per session (the key carrying
  ``owner tag XOR HMAC(slot key, random part)``): every load would then need the slot
  key, and losing it would lose every session instead of misfiling new index entries.
  Not adopted.
- The slot key is 256 random bits kept in the cluster itself (``prefix + "slot-key"``,
  created once by whichever process needs it first), not derived from the middleware's
  ``secret_key``: the CLI and admin code that list or revoke sessions outside the
  middleware find it without configuration, every app sharing the prefix agrees on it,
  and rotating ``secret_key`` does not move anybody's index (sessions under an old tag
  would drop out of ``revoke_all``). Each process re-reads it at most once a minute and
  writes back the value it knows if the key has vanished (a FLUSHALL, or an
  ``allkeys-*`` eviction policy, which evicts live sessions too and is wrong for a
  session store anyway).
- Owner changes: ``None -> owner`` and ``owner -> other owner`` move the session into
  the new owner's slot under a new key (with rotation switched off, the cluster store
  still rotates: two slots cannot share one key). ``owner -> None`` stays where it is;
  the same script drops the index entry.
- A move across slots: first one script in the old slot merges the request's changes,
  seals the record (from then on it loads as missing and a save to it is refused as
  "deleted", so a concurrent save is never acknowledged and then lost) and returns it;
  then one script creates it in the new slot. If that fails, the new record is deleted
  and only then the old one unsealed (its merged changes stay: a failed write may have
  been applied, as with any store error); if the process dies in between, the sealed
  record expires within a minute (the user is signed out, never signed in twice). A
  rotation inside one slot is one script, as on a single server.
- Nothing scans the keyspace: Redis expires hashes natively, and listings drop index
  entries whose hash is gone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

from ..errors import ImproperlyConfigured
from .base import StoredSession, hash_key

__all__ = [
    "TAG_LENGTH",
    "ClusterLayout",
    "Layout",
    "check_prefix",
    "decode_record",
    "mint_key",
    "owner_tag",
    "random_tag",
    "tag_of",
]

TAG_LENGTH = 4
_KEY_BYTES = 32
# A session's hash: one field per top-level key, and the metadata beside them.
DATA = "d:"
EXPIRES, CREATED, UPDATED, EXPIRY, OWNER, MOVED = "m:e", "m:c", "m:u", "m:x", "m:o", "m:m"
# The owner's device (asgi_sessions.devices), written with the owner; older records lack it.
DEVICE = "m:d"


def decode_record(raw: dict[Any, Any], now: float) -> StoredSession | None:
    """The live session an ``HGETALL`` returned, or ``None``."""
    if not raw:
        return None
    get = raw.get
    expires = get(EXPIRES)
    if expires is None:
        if isinstance(next(iter(raw)), bytes):
            # A client built without decode_responses=True (ours decode in the parser).
            return decode_record({n.decode(): v.decode() for n, v in raw.items()}, now)
        return None
    expires_at = float(expires)
    # Redis expires the hash itself; the clock check makes an injected clock
    # authoritative. A sealed record has moved to another slot: gone for everyone else.
    if expires_at <= now or MOVED in raw:
        return None
    # The metadata by name (a few lookups, whatever the session's size), one pass for the
    # data fields, and positional arguments (keywords cost twice as much: measured 6,800
    # instructions against 3,500); test_redis_layout pins the order.
    return StoredSession(
        {name[2:]: value for name, value in raw.items() if name[:2] == DATA},
        expires_at,
        float(raw[CREATED]),
        float(raw[UPDATED]),
        get(EXPIRY),
        get(OWNER),
        get(DEVICE),
    )


def check_prefix(prefix: str) -> None:
    """Refuse a prefix that would override the per-session tags (one slot for everyone)."""
    if "{" in prefix or "}" in prefix:
        raise ImproperlyConfigured(
            f"The key prefix {prefix!r} contains a brace. On a Redis Cluster a braced part "
            "decides the slot, so every session would land on one node; RedisStore puts "
            "a tag of its own in each key instead. Use a prefix without braces, such as "
            "'asgi_sessions:'."
        )


def _tag(three_bytes: bytes) -> str:
    tag = base64.urlsafe_b64encode(three_bytes).decode()
    # A key starting with "-" reads as an option on a command line (`show URL KEY`).
    return "_" + tag[1:] if tag[0] == "-" else tag


def random_tag() -> str:
    """A tag for a session with no owner: any slot."""
    return _tag(secrets.token_bytes(3))


def owner_tag(slot_key: bytes, owner: str) -> str:
    """The tag of every session ``owner`` has, and of their index."""
    return _tag(hmac.new(slot_key, owner.encode(), hashlib.sha256).digest()[:3])


def mint_key(tag: str) -> str:
    """A new session key in the slot of ``tag``."""
    return tag + secrets.token_urlsafe(_KEY_BYTES)


def tag_of(session_key: str) -> str:
    """The tag a key carries (any key: one minted elsewhere just lands on its own slot)."""
    return session_key[:TAG_LENGTH]


class Layout:
    """Key names on one Redis server (or the master Sentinel names).

    ``name(key)`` is a session's hash; the owner index holds *members*, with
    ``prefix + member == name``; ``index_prefix(...) + owner`` names an owner's index.
    """

    cluster = False

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._index = prefix + "owner:"

    def member(self, session_key: str) -> str:
        return hash_key(session_key)

    def name(self, session_key: str) -> str:
        return self.prefix + self.member(session_key)

    def index_prefix(self, tag: str) -> str:
        """The owner indexes a script in the slot of ``tag`` may touch."""
        return self._index

    @staticmethod
    def store_id(member: str) -> str:
        """The store id (the key's hash) inside an index member, for public ids."""
        return member.rpartition("}")[2]

    def kind(self, name: str) -> str:
        """What a key under the prefix is: ``"session"``, ``"index"`` or ``"other"`` (the
        cluster's slot key, a replication check's scratch key)."""
        rest = name[len(self.prefix) :].rpartition("}")[2]
        if rest.startswith("owner:"):
            return "index"
        if rest.endswith(":ack") or rest == "slot-key":
            return "other"
        return "session"


class ClusterLayout(Layout):
    """Key names on a Redis Cluster: every name carries its session's (or owner's) tag."""

    cluster = True

    def __init__(self, prefix: str) -> None:
        check_prefix(prefix)
        super().__init__(prefix)

    def member(self, session_key: str) -> str:
        return f"{{{tag_of(session_key)}}}{hash_key(session_key)}"

    def index_prefix(self, tag: str) -> str:
        return f"{self.prefix}{{{tag}}}owner:"

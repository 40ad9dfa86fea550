"""Slot tags: an owner's sessions and index share a slot; everything else spreads out.
And how a session's hash, as ``HGETALL`` returns it, reads back."""

from __future__ import annotations

import base64
import secrets
from collections import Counter

import pytest
from redis.crc import key_slot

from asgi_sessions.errors import ImproperlyConfigured
from asgi_sessions.stores.base import StoredSession, hash_key
from asgi_sessions.stores.redis_layout import (
    TAG_LENGTH,
    ClusterLayout,
    Layout,
    check_prefix,
    decode_record,
    mint_key,
    owner_tag,
    random_tag,
    tag_of,
)

PREFIX = "asgi_sessions:"
SLOT_KEY = b"k" * 32
LAYOUT = ClusterLayout(PREFIX)


def session_name(prefix: str, key: str) -> str:
    return LAYOUT.name(key)


def slot(name: str) -> int:
    return key_slot(name.encode())


def test_an_owners_sessions_and_index_share_one_slot() -> None:
    tag = owner_tag(SLOT_KEY, "ada")
    index = LAYOUT.index_prefix(tag) + "ada"

    slots = {slot(session_name(PREFIX, mint_key(tag))) for _ in range(20)}

    assert slots == {slot(index)}


def test_a_key_keeps_256_random_bits_after_its_tag() -> None:
    key = mint_key(random_tag())

    assert len(tag_of(key)) == TAG_LENGTH
    assert len(base64.urlsafe_b64decode(key[TAG_LENGTH:] + "=")) == 32


def test_the_stored_name_holds_the_keys_hash_not_the_key() -> None:
    key = mint_key(random_tag())

    name = session_name(PREFIX, key)

    assert name == f"{PREFIX}{{{key[:TAG_LENGTH]}}}{hash_key(key)}"
    assert key not in name


def test_the_owner_tag_depends_on_the_slot_key() -> None:
    other = secrets.token_bytes(32)
    owners = [f"user-{n}" for n in range(50)]

    assert [owner_tag(SLOT_KEY, o) for o in owners] == [owner_tag(SLOT_KEY, o) for o in owners]
    assert [owner_tag(SLOT_KEY, o) for o in owners] != [owner_tag(other, o) for o in owners]


def test_ten_thousand_sessions_spread_over_thousands_of_slots() -> None:
    ownerless = Counter(slot(session_name(PREFIX, mint_key(random_tag()))) for _ in range(10_000))
    owned = Counter(
        slot(session_name(PREFIX, mint_key(owner_tag(SLOT_KEY, f"u{n}")))) for n in range(10_000)
    )

    # 10,000 draws over 16,384 slots cover 7,300 of them on average.
    assert len(ownerless) > 6_500
    assert len(owned) > 6_500


@pytest.mark.parametrize("prefix", ["{sessions}:", "app:{x}:", "app}"])
def test_a_prefix_with_a_brace_is_refused(prefix: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="every session would land on one node"):
        check_prefix(prefix)


def test_index_members_name_their_sessions_under_the_prefix() -> None:
    key = mint_key(random_tag())

    for layout in (Layout(PREFIX), ClusterLayout(PREFIX)):
        assert PREFIX + layout.member(key) == layout.name(key)
        assert layout.store_id(layout.member(key)) == hash_key(key)


def test_one_server_keeps_the_layout_it_always_had() -> None:
    key = mint_key(random_tag())

    assert Layout(PREFIX).name(key) == PREFIX + hash_key(key)
    assert Layout(PREFIX).index_prefix(tag_of(key)) == PREFIX + "owner:"


def test_no_tag_starts_with_a_dash_so_keys_never_read_as_options() -> None:
    tags = [random_tag() for _ in range(2000)] + [owner_tag(SLOT_KEY, f"u{n}") for n in range(2000)]

    assert all(len(tag) == TAG_LENGTH and not tag.startswith("-") for tag in tags)


# -- reading a hash back ------------------------------------------------------------------

RECORD = {
    "m:e": "2000.5",
    "m:c": "1000.25",
    "m:u": "1500.125",
    "m:x": "s:3600",
    "m:o": "alice",
    "m:d": "device-text",
    "d:user": '"alice"',
    "d:m:e": '"a key that looks like metadata"',
}


def test_every_metadata_field_lands_in_its_own_attribute() -> None:
    # decode_record builds StoredSession positionally (it is on every load): this pins
    # the order, so a field added to StoredSession cannot shift the others silently.
    assert decode_record(dict(RECORD), 1999.0) == StoredSession(
        data={"user": '"alice"', "m:e": '"a key that looks like metadata"'},
        expires_at=2000.5,
        created_at=1000.25,
        updated_at=1500.125,
        expiry="s:3600",
        owner="alice",
        device="device-text",
    )


def test_a_record_without_optional_metadata_reads_them_as_none() -> None:
    record = {"m:e": "2000.5", "m:c": "1000.25", "m:u": "1500.125", "d:a": "1"}

    loaded = decode_record(record, 1999.0)

    assert loaded is not None
    assert (loaded.expiry, loaded.owner, loaded.device) == (None, None, None)


def test_a_client_without_decode_responses_reads_the_same_record() -> None:
    raw = {name.encode(): value.encode() for name, value in RECORD.items()}

    assert decode_record(raw, 1999.0) == decode_record(dict(RECORD), 1999.0)


@pytest.mark.parametrize(
    "record",
    [
        {},
        {"d:a": "1"},  # no end: a half-written or foreign hash
        {b"d:a": b"1"},
        {**RECORD, "m:e": "1999.0"},  # ends now: dead
        {**RECORD, "m:m": "moved"},  # sealed: moved to another slot
    ],
)
def test_an_empty_endless_expired_or_sealed_hash_reads_as_missing(
    record: dict[str | bytes, str | bytes],
) -> None:
    assert decode_record(record, 1999.0) is None

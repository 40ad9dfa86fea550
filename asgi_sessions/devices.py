"""Which device a signed-in session belongs to: the "Your devices" page's fields.

For a session with an owner, the middleware records the request's ``User-Agent`` (at
most :data:`MAX_USER_AGENT` characters) and, only with ``record_ip=``, its client
address: when the session is created signed in and at every owner change (sign-in,
switch), never on other requests. Signing out clears them. Together with the record's
creation and last-write times they are what ``store.list_sessions(owner)`` shows.

A store keeps the device as one opaque text (compact JSON, :func:`encode_device`) that
it writes exactly when it writes the owner, so a store needs no parsing of its own and
old records without one read as "unknown device".

The client address is personal data (GDPR recital 30). ``record_ip=False`` (default)
keeps none; ``record_ip=True`` keeps it whole; ``record_ip=(24, 48)`` keeps only the
network: the IPv4 /24 and IPv6 /48 it falls in ("203.0.113.0/24"), which still tells
"home" from "office" on a devices page.

:func:`device_label` names the device ("Firefox on Linux", "Safari on iPhone") with
``ua-parser`` when installed (the ``[devices]`` extra), else shows the raw string.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

__all__ = [
    "MAX_USER_AGENT",
    "RecordIP",
    "check_record_ip",
    "decode_device",
    "device_label",
    "encode_device",
    "request_device",
]

#: User agents are cut to this many characters (Laravel's database sessions keep 500).
MAX_USER_AGENT = 500

RecordIP = bool | tuple[int, int]
"""``False``: no address; ``True``: the whole address; ``(v4, v6)``: only the network of
that many leading bits (``(24, 48)``)."""


def check_record_ip(value: object) -> RecordIP:
    """The ``record_ip=`` option, checked at start-up (a typo is an error, not a leak)."""
    if isinstance(value, bool):
        return value
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(type(bits) is int for bits in value)
        and 0 <= value[0] <= 32
        and 0 <= value[1] <= 128
    ):
        return (value[0], value[1])
    from .errors import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"record_ip must be False, True, or (IPv4 prefix, IPv6 prefix) such as (24, 48), "
        f"not {value!r}."
    )


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            # Latin-1 decodes any byte string: a header is never a reason to fail a save.
            return value.decode("latin-1")
    return None


def _address(client: Any, record_ip: RecordIP) -> str | None:
    if record_ip is False or not client:
        return None
    host = str(client[0])
    if record_ip is True:
        return host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a unix socket path or a test client's name: no network to keep
    bits = record_ip[0] if address.version == 4 else record_ip[1]
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


def encode_device(user_agent: str | None, ip: str | None) -> str:
    """The one text a store keeps for a session's device."""
    device: dict[str, str] = {}
    if user_agent:
        device["ua"] = user_agent[:MAX_USER_AGENT]
    if ip:
        device["ip"] = ip
    return json.dumps(device, separators=(",", ":"), ensure_ascii=False)


def request_device(headers: Iterable[tuple[bytes, bytes]], client: Any, record_ip: RecordIP) -> str:
    """The device text for a request: its user agent and, if asked for, its address."""
    return encode_device(_header(headers, b"user-agent"), _address(client, record_ip))


def decode_device(text: str | None) -> tuple[str | None, str | None]:
    """``(user_agent, ip)`` from a stored device text; ``(None, None)`` for none or junk."""
    if not text:
        return None, None
    try:
        device = json.loads(text)
    except ValueError:
        return None, None
    if not isinstance(device, dict):
        return None, None
    user_agent, ip = device.get("ua"), device.get("ip")
    return (
        user_agent if isinstance(user_agent, str) else None,
        ip if isinstance(ip, str) else None,
    )


def device_label(user_agent: str | None) -> str:
    """A readable name for a user agent: "Firefox on Linux", "Safari on iPhone".

    Uses ``ua-parser`` when installed; otherwise (or when it recognises nothing) the raw
    string. ``"Unknown device"`` when no user agent was recorded.
    """
    if not user_agent:
        return "Unknown device"
    return _label(user_agent)


@lru_cache(maxsize=1024)
def _label(user_agent: str) -> str:
    try:
        from ua_parser import parse
    except ImportError:
        return user_agent
    result = parse(user_agent)
    browser = result.user_agent.family if result.user_agent is not None else None
    if browser is None or browser == "Other":
        return user_agent
    browser = browser.removeprefix("Mobile ").removesuffix(" Mobile")
    device = result.device.family if result.device is not None else None
    system = result.os.family if result.os is not None else None
    # A named device ("iPhone", "iPad", "Pixel 9") says more than its system's name.
    if device and device not in ("Other", "Generic Smartphone", "Generic Tablet", "K", "Mac"):
        where = device
    elif system and system != "Other":
        where = "macOS" if system == "Mac OS X" else system
    else:
        return browser
    return f"{browser} on {where}"

"""Keep secrets out of messages: a store URL's password never reaches an error or a log."""

from __future__ import annotations

import re

__all__ = ["redact_url"]

# scheme://[user[:password]@]rest: the userinfo ends at the last "@" before the path.
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#]*)@")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (works on malformed URLs too)."""
    match = _USERINFO.match(url)
    if match is None:
        return url
    user, colon, _ = match["userinfo"].partition(":")
    hidden = f"{user}:***" if colon else user
    return f"{match['scheme']}{hidden}@{url[match.end() :]}"

"""``python -m asgi_sessions``: see :mod:`asgi_sessions.cli`."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

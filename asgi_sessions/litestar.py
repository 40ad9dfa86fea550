"""Litestar's dependency for the loaded session: ``Provide(provide_session)``.

The middleware itself is pure ASGI and needs nothing here. Litestar injects a handler's
``request`` by its declared type, so its dependency takes Litestar's ``Request`` where
:func:`asgi_sessions.get_session` takes Starlette's ``HTTPConnection``.
"""

from __future__ import annotations

from typing import Any

from .middleware import session_in
from .session import Session

try:
    from litestar import Request
except ImportError as exc:  # pragma: no cover - the dev extra installs Litestar
    raise ImportError(
        "asgi_sessions.litestar is for Litestar apps; install it with: pip install litestar"
    ) from exc

__all__ = ["provide_session"]


async def provide_session(request: Request[Any, Any, Any]) -> Session:
    """The loaded session: ``dependencies={"session": Provide(provide_session)}`` in Litestar."""
    return await session_in(
        request.scope, "middleware=[DefineMiddleware(SessionMiddleware, secret_key=...)]"
    )

"""starlette-admin's login and logout, through its AuthProvider, on our sessions.

The provider is the one starlette-admin's documentation shows (the user name in
``request.session``); the session middleware goes in ``Admin(middlewares=[...])`` as its
docs say, so switching to ours changes only that line. Its login form carries the CSRF
token of its own signed-cookie middleware, which the test reads from the page as a
browser would.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette_admin import BaseAdmin
from starlette_admin.auth import AdminUser, AuthProvider, LoginFailed

from asgi_sessions import MemoryStore, SessionMiddleware, SessionNotLoaded
from tests.integrations.web import Browser, served
from tests.support import SECRET

PASSWORD = "correct horse"
CSRF_FIELD = re.compile(r'name="csrftoken" value="([^"]+)"')


class PasswordProvider(AuthProvider):
    """starlette-admin's documented example: the user name kept in the session."""

    async def login(
        self, username: str, password: str, remember_me: bool, request: Request
    ) -> Response | None:
        if (username, password) != ("admin", PASSWORD):
            raise LoginFailed("Invalid username or password")
        request.session["username"] = username
        return None

    async def authenticate(self, request: Request) -> AdminUser | None:
        username = request.session.get("username")
        return AdminUser(username=username) if username else None

    async def logout(self, request: Request) -> Response | None:
        request.session.clear()
        return None


def admin_app(session_middleware: Middleware) -> Starlette:
    """A Starlette app with starlette-admin at /admin."""
    app = Starlette()
    admin = BaseAdmin(
        title="Admin",
        auth_provider=PasswordProvider(),
        secret_key=SECRET,
        middlewares=[session_middleware],
    )
    admin.mount_to(app)
    return app


@pytest.fixture
async def admin_url(session_middleware: Middleware) -> AsyncIterator[str]:
    """The admin app served by uvicorn; yields the base URL."""
    async with served(admin_app(session_middleware)) as base_url:
        yield base_url


def csrf_token(page: httpx.Response) -> str:
    match = CSRF_FIELD.search(page.text)
    assert match is not None, page.text[:500]
    return match[1]


async def log_in(user_agent: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    form = await user_agent.get("/admin/login")
    assert form.status_code == 200
    fields = {"username": "admin", "password": password, "csrftoken": csrf_token(form)}
    return await user_agent.post("/admin/login", data=fields)


def sends_to_login(response: httpx.Response) -> bool:
    location = response.headers.get("location", "")
    return response.status_code == 303 and "/admin/login" in location


async def test_login_opens_the_admin_and_logout_closes_it(admin_url: str, browser: Browser) -> None:
    user_agent = browser(admin_url)
    assert sends_to_login(await user_agent.get("/admin/"))

    logged_in = await log_in(user_agent)
    assert logged_in.status_code == 303, logged_in.text[:500]
    assert logged_in.headers["location"].endswith("/admin/")
    index = await user_agent.get("/admin/")
    assert index.status_code == 200 and "/admin/logout" in index.text

    logged_out = await user_agent.post("/admin/logout", data={"csrftoken": csrf_token(index)})
    assert logged_out.status_code == 303
    assert sends_to_login(await user_agent.get("/admin/"))


async def test_a_wrong_password_does_not_log_in(admin_url: str, browser: Browser) -> None:
    user_agent = browser(admin_url)
    refused = await log_in(user_agent, password="wrong")
    assert refused.status_code == 400 and "Invalid username or password" in refused.text
    assert sends_to_login(await user_agent.get("/admin/"))


async def test_the_login_lives_in_the_session_cookie_of_that_browser(
    admin_url: str, browser: Browser
) -> None:
    user_agent, other = browser(admin_url), browser(admin_url)
    assert (await log_in(user_agent)).status_code == 303

    assert (await user_agent.get("/admin/")).status_code == 200
    assert sends_to_login(await other.get("/admin/"))
    del user_agent.cookies["session"]  # keeps starlette-admin's own CSRF cookie
    assert sends_to_login(await user_agent.get("/admin/"))


async def test_without_autoload_the_admin_fails_with_a_message_naming_autoload() -> None:
    lazy = Middleware(SessionMiddleware, secret_key=SECRET, store=MemoryStore())
    transport = httpx.ASGITransport(app=admin_app(lazy))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with pytest.raises(SessionNotLoaded, match=r"reading 'username'.*autoload=True"):
            await client.get("/admin/")

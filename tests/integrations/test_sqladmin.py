"""sqladmin's login and logout, through its AuthenticationBackend, on our sessions.

The backend is the one sqladmin's documentation shows (the token in
``request.session``). sqladmin mounts Starlette's ``SessionMiddleware`` itself, from
``AuthenticationBackend.__init__``; switching to ours is one line, replacing
``backend.middlewares``, as the README shows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqladmin import Admin
from sqladmin.authentication import AuthenticationBackend
from sqladmin.flash import flash, get_flashed_messages
from sqlalchemy import create_engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_sessions import MemoryStore, SessionMiddleware, SessionNotLoaded
from tests.integrations.web import Browser, served
from tests.support import SECRET

PASSWORD = "correct horse"


class PasswordBackend(AuthenticationBackend):
    """sqladmin's documented example: check the form, keep a token in the session."""

    async def login(self, request: Request) -> bool:
        form = await request.form()
        if (form.get("username"), form.get("password")) != ("admin", PASSWORD):
            return False
        request.session.update({"token": "admin-token"})
        return True

    async def logout(self, request: Request) -> bool:
        request.session.clear()
        return True

    async def authenticate(self, request: Request) -> bool:
        return request.session.get("token") == "admin-token"


def admin_app(session_middleware: Middleware) -> Starlette:
    """A Starlette app with sqladmin at /admin (no models: the login is what is tested)."""
    backend = PasswordBackend(secret_key=SECRET)
    backend.middlewares = [session_middleware]  # the switch from Starlette's middleware
    app = Starlette()
    # An in-memory SQLite engine that no request opens (no model is registered).
    Admin(app, create_engine("sqlite://"), authentication_backend=backend)
    return app


@pytest.fixture
async def admin_url(session_middleware: Middleware) -> AsyncIterator[str]:
    """The admin app served by uvicorn; yields the base URL."""
    async with served(admin_app(session_middleware)) as base_url:
        yield base_url


async def log_in(user_agent: httpx.AsyncClient, password: str = PASSWORD) -> httpx.Response:
    form = await user_agent.get("/admin/login")
    assert form.status_code == 200 and 'name="password"' in form.text
    return await user_agent.post("/admin/login", data={"username": "admin", "password": password})


def sends_to_login(response: httpx.Response) -> bool:
    return response.status_code == 302 and response.headers["location"].endswith("/admin/login")


async def test_login_opens_the_admin_and_logout_closes_it(admin_url: str, browser: Browser) -> None:
    user_agent = browser(admin_url)
    assert sends_to_login(await user_agent.get("/admin/"))

    logged_in = await log_in(user_agent)
    assert logged_in.status_code == 302
    assert logged_in.headers["location"].endswith("/admin/")
    index = await user_agent.get("/admin/")
    assert index.status_code == 200 and "/admin/logout" in index.text

    logged_out = await user_agent.get("/admin/logout")
    assert logged_out.status_code == 302
    assert logged_out.headers["location"].endswith("/admin/")
    assert sends_to_login(await user_agent.get("/admin/"))


async def test_a_wrong_password_does_not_log_in(admin_url: str, browser: Browser) -> None:
    user_agent = browser(admin_url)
    refused = await log_in(user_agent, password="wrong")
    assert refused.status_code == 400 and "Invalid credentials" in refused.text
    assert sends_to_login(await user_agent.get("/admin/"))


async def test_the_login_lives_in_the_session_cookie_of_that_browser(
    admin_url: str, browser: Browser
) -> None:
    user_agent, other = browser(admin_url), browser(admin_url)
    await log_in(user_agent)

    assert (await user_agent.get("/admin/")).status_code == 200
    assert sends_to_login(await other.get("/admin/"))
    user_agent.cookies.clear()
    assert sends_to_login(await user_agent.get("/admin/"))


async def test_a_cookie_copied_before_logout_opens_the_admin_only_with_starlettes_cookie(
    admin_url: str, browser: Browser, session_middleware: Middleware
) -> None:
    # Starlette's session is the cookie itself, so a copy outlives the logout; ours is a
    # key to a record that the logout deleted.
    user_agent, thief = browser(admin_url), browser(admin_url)
    await log_in(user_agent)
    thief.cookies.update(user_agent.cookies)
    await user_agent.get("/admin/logout")

    replayed = await thief.get("/admin/")

    if session_middleware.cls is StarletteSessionMiddleware:
        assert replayed.status_code == 200
    else:
        assert sends_to_login(replayed)


async def test_without_autoload_the_admin_fails_with_a_message_naming_autoload() -> None:
    lazy = Middleware(SessionMiddleware, secret_key=SECRET, store=MemoryStore())
    transport = httpx.ASGITransport(app=admin_app(lazy))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with pytest.raises(SessionNotLoaded, match=r"reading 'token'.*autoload=True"):
            await client.get("/admin/")


def flash_app(session_middleware: Middleware) -> Starlette:
    """sqladmin's own ``flash()`` and ``get_flashed_messages()`` (issue 13, defect 12)."""

    async def add(request: Request) -> JSONResponse:
        flash(request, request.query_params["message"])  # appends to a list in place
        if "visit" in request.query_params:
            request.session["last_visit"] = request.query_params["visit"]
        return JSONResponse({})

    async def show(request: Request) -> JSONResponse:
        return JSONResponse([m["message"] for m in get_flashed_messages(request)])

    return Starlette(
        routes=[Route("/flash", add), Route("/messages", show)],
        middleware=[session_middleware],
    )


async def test_a_second_flash_in_a_request_that_also_sets_a_key_is_kept(
    session_middleware: Middleware, browser: Browser
) -> None:
    # Starlette writes the whole session when any key changed, so the message appended
    # in place in the second request survives there; here it must survive too.
    async with served(flash_app(session_middleware)) as base_url:
        user_agent = browser(base_url)
        await user_agent.get("/flash", params={"message": "Saved."})
        await user_agent.get("/flash", params={"message": "Saved again.", "visit": "2"})
        assert (await user_agent.get("/messages")).json() == ["Saved.", "Saved again."]
        assert (await user_agent.get("/messages")).json() == []


async def test_a_second_flash_alone_is_kept_here_and_lost_by_starlette(
    session_middleware: Middleware, browser: Browser
) -> None:
    # Nothing else changes in the second request: Starlette does not see the in-place
    # append and drops the message; nested-change detection finds and saves it.
    starlette = session_middleware.cls is StarletteSessionMiddleware
    async with served(flash_app(session_middleware)) as base_url:
        user_agent = browser(base_url)
        await user_agent.get("/flash", params={"message": "one"})
        await user_agent.get("/flash", params={"message": "two"})
        expected = ["one"] if starlette else ["one", "two"]
        assert (await user_agent.get("/messages")).json() == expected

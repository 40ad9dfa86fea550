"""Authlib's Starlette OAuth client signs a user in through our sessions.

The app under test is what Authlib's documentation shows: ``authorize_redirect`` at
/login, which keeps the OAuth ``state`` in ``request.session``, and
``authorize_access_token`` at the callback, which checks it against the session and
fetches the token over HTTP from the provider. Both run under uvicorn; the provider is
``oauth_provider``, built from Authlib's own server classes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.integrations.starlette_client import OAuth, OAuthError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from asgi_sessions import MemoryStore, SessionMiddleware, SessionNotLoaded
from tests.integrations.oauth_provider import USER, Client, ProviderState, provider_app
from tests.integrations.web import TLS, Browser, served
from tests.support import SECRET


def client_app(provider_url: str, client: Client, session_middleware: Middleware) -> Starlette:
    """The app that signs users in with the provider, as Authlib's docs write it."""
    oauth = OAuth()
    oauth.register(
        "provider",
        client_id=client.client_id,
        client_secret=client.client_secret,
        authorize_url=f"{provider_url}/authorize",
        access_token_url=f"{provider_url}/token",
        api_base_url=f"{provider_url}/",
        client_kwargs={"scope": "profile", "verify": TLS},
    )

    async def login(request: Request) -> Response:
        callback = request.url_for("auth")
        response: Response = await oauth.provider.authorize_redirect(request, callback)
        return response

    async def auth(request: Request) -> Response:
        try:
            token = await oauth.provider.authorize_access_token(request)
        except OAuthError as error:
            return PlainTextResponse(error.error, status_code=400)
        userinfo = (await oauth.provider.get("userinfo", token=token)).json()
        request.session["user"] = userinfo["sub"]
        return RedirectResponse("/me", status_code=303)

    def me(request: Request) -> Response:
        # A sync view, as Starlette apps write them: request.session without await.
        return JSONResponse({"user": request.session.get("user")})

    return Starlette(
        routes=[Route("/login", login), Route("/auth", auth, name="auth"), Route("/me", me)],
        middleware=[session_middleware],
    )


@dataclass
class Sites:
    app: str  # the client app's base URL
    provider: ProviderState


@pytest.fixture
async def sites(session_middleware: Middleware) -> AsyncIterator[Sites]:
    """The provider and the client app, each under its own uvicorn."""
    state = ProviderState()
    async with served(provider_app(state)) as provider_url:
        app = client_app(provider_url, state.client, session_middleware)
        async with served(app) as app_url:
            state.client.redirect_uri = f"{app_url}/auth"
            yield Sites(app_url, state)


async def to_callback(user_agent: httpx.AsyncClient) -> str:
    """Click "log in", let the provider approve; return the callback URL it sends back."""
    login = await user_agent.get("/login")
    assert login.status_code == 302, login.text
    assert urlsplit(login.headers["location"]).path == "/authorize"
    approved = await user_agent.get(login.headers["location"])
    assert approved.status_code == 302, approved.text
    callback: str = approved.headers["location"]
    assert parse_qs(urlsplit(callback).query).keys() == {"code", "state"}
    return callback


async def signed_in_user(user_agent: httpx.AsyncClient) -> object:
    return (await user_agent.get("/me")).json()["user"]


async def test_the_login_completes_with_the_state_kept_in_the_session(
    sites: Sites, browser: Browser
) -> None:
    user_agent = browser(sites.app)
    callback = await to_callback(user_agent)

    done = await user_agent.get(callback)

    assert done.status_code == 303, done.text
    assert await signed_in_user(user_agent) == USER
    assert sites.provider.codes == {}  # the code was redeemed at the token endpoint
    assert list(sites.provider.tokens.values()) == [USER]


async def test_a_forged_state_is_refused_and_nobody_is_signed_in(
    sites: Sites, browser: Browser
) -> None:
    user_agent = browser(sites.app)
    callback = urlsplit(await to_callback(user_agent))
    query = parse_qs(callback.query)
    forged = callback._replace(query=urlencode({"code": query["code"][0], "state": "forged"}))

    refused = await user_agent.get(forged.geturl())

    assert (refused.status_code, refused.text) == (400, "mismatching_state")
    assert await signed_in_user(user_agent) is None
    assert sites.provider.tokens == {}


async def test_a_callback_without_the_state_is_refused(sites: Sites, browser: Browser) -> None:
    user_agent = browser(sites.app)
    callback = urlsplit(await to_callback(user_agent))
    code_only = callback._replace(query=urlencode({"code": parse_qs(callback.query)["code"][0]}))

    refused = await user_agent.get(code_only.geturl())

    assert (refused.status_code, refused.text) == (400, "mismatching_state")
    assert await signed_in_user(user_agent) is None


async def test_the_callback_fails_in_a_browser_whose_session_does_not_hold_the_state(
    sites: Sites, browser: Browser
) -> None:
    # The state lives only in the session of the browser that started the login: the same
    # callback URL in another browser (no session cookie) fails, then works in the first.
    first, other = browser(sites.app), browser(sites.app)
    callback = await to_callback(first)

    refused = await other.get(callback)
    done = await first.get(callback)

    assert (refused.status_code, refused.text) == (400, "mismatching_state")
    assert done.status_code == 303, done.text
    assert await signed_in_user(first) == USER
    assert await signed_in_user(other) is None


async def test_a_replayed_callback_is_refused_because_the_state_left_the_session(
    sites: Sites, browser: Browser
) -> None:
    user_agent = browser(sites.app)
    callback = await to_callback(user_agent)
    await user_agent.get(callback)

    replayed = await user_agent.get(callback)

    assert (replayed.status_code, replayed.text) == (400, "mismatching_state")
    assert await signed_in_user(user_agent) == USER


async def test_without_autoload_the_redirect_fails_with_a_message_naming_autoload() -> None:
    # Authlib reads request.session without awaiting it: our middleware needs autoload=True.
    # Without it the user gets SessionNotLoaded (a 500), whose message names the fix.
    state = ProviderState()
    lazy = Middleware(SessionMiddleware, secret_key=SECRET, store=MemoryStore())
    app = client_app("http://127.0.0.1:9", state.client, lazy)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        with pytest.raises(SessionNotLoaded, match=r"autoload=True"):
            await client.get("/login")

"""A small OAuth 2 authorisation server built from Authlib's own server classes.

Authorization-code grant only, one registered client, one resource owner ("alice") who is
taken as signed in at the provider and consenting, so the flow under test is the client
side: Authlib's Starlette client keeping its ``state`` in the session. Authlib ships
server integrations for Flask and Django only; this is the Starlette glue its
``AuthorizationServer`` asks a framework to provide (requests in, responses out).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import (
    AuthorizationCodeMixin,
    AuthorizationServer,
    ClientMixin,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

USER = "alice"


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uri: str = ""  # set once the client app has a port

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_allowed_scope(self, scope: str) -> str:
        return scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri == self.redirect_uri

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: str

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


@dataclass
class ProviderState:
    """What the provider remembers: its client, the codes it issued, the tokens."""

    client: Client = field(default_factory=lambda: Client("the-app", secrets.token_urlsafe(16)))
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)  # access token -> user


class _FormRequest(OAuth2Request):
    """An OAuth2Request over a Starlette request whose body was already read."""

    def __init__(self, request: Request, body: bytes) -> None:
        super().__init__(request.method, str(request.url), headers=request.headers)
        self._args = dict(request.query_params)
        self._form = dict(parse_qsl(body.decode())) if body else {}
        self.payload = BasicOAuth2Payload({**self._args, **self._form})

    @property
    def args(self) -> dict[str, str]:
        return self._args

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _CodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS: ClassVar[list[str]] = ["client_secret_basic"]
    state: ProviderState  # set on the subclass each provider makes

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        self.state.codes[code] = AuthorizationCode(
            code, request.client.client_id, request.payload.redirect_uri, request.scope, USER
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        found = self.state.codes.get(code)
        return found if found is not None and found.client_id == client.client_id else None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        self.state.codes.pop(authorization_code.code, None)

    def authenticate_user(self, authorization_code: AuthorizationCode) -> str:
        return authorization_code.user


class _Server(AuthorizationServer):
    def __init__(self, state: ProviderState) -> None:
        super().__init__()
        self.state = state
        self.register_token_generator(
            "default", BearerTokenGenerator(lambda **_: secrets.token_urlsafe(24))
        )
        self.register_grant(type("CodeGrant", (_CodeGrant,), {"state": state}))

    def query_client(self, client_id: str) -> Client | None:
        return self.state.client if client_id == self.state.client.client_id else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        self.state.tokens[token["access_token"]] = request.user

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request  # built by the endpoint, which could await the body

    def handle_response(self, status: int, body: Any, headers: list[tuple[str, str]]) -> Response:
        if isinstance(body, dict):
            return JSONResponse(body, status, headers=dict(headers))
        return Response(body, status, headers=dict(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass


def provider_app(state: ProviderState) -> Starlette:
    """The provider's endpoints: /authorize, /token and /userinfo."""
    server = _Server(state)

    async def authorize(request: Request) -> Response:
        oauth_request = _FormRequest(request, b"")
        grant = server.get_consent_grant(oauth_request, end_user=USER)
        response: Response = server.create_authorization_response(
            oauth_request, grant_user=USER, grant=grant
        )
        return response

    async def token(request: Request) -> Response:
        response: Response = server.create_token_response(
            _FormRequest(request, await request.body())
        )
        return response

    async def userinfo(request: Request) -> Response:
        scheme, _, access_token = request.headers.get("authorization", "").partition(" ")
        user = state.tokens.get(access_token) if scheme.lower() == "bearer" else None
        if user is None:
            return JSONResponse({"error": "invalid_token"}, 401)
        return JSONResponse({"sub": user})

    return Starlette(
        routes=[
            Route("/authorize", authorize),
            Route("/token", token, methods=["POST"]),
            Route("/userinfo", userinfo),
        ]
    )

"""A tour of asgi-server-sessions in one small Starlette app: ``make run``, then open http://127.0.0.1:8000.

Every page shows the session panel, so you can watch what each click does to the session:
a favourite colour and the "comment once" example from Django's docs, log in / log out with
key cycling, the nested-mutation gotcha, and "your sessions" with revoke / log out
everywhere else. Sessions live in SQLite (``DEMO_SESSIONS_DB``, default
``sessions.sqlite3``), so they survive a server restart.

Plain HTML forms, and JavaScript only on the "two requests at once" page, which needs
``fetch`` to send them in parallel. Every value that comes from a user or the session goes
through ``html.escape`` (``e()`` below) before it reaches the page.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from html import escape as e
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

from asgi_sessions import Session, SessionMiddleware, SQLiteStore

SECRET_KEY = os.environ.get("DEMO_SECRET_KEY", "demo-only-secret-change-me-in-production")
store = SQLiteStore(os.environ.get("DEMO_SESSIONS_DB", "sessions.sqlite3"))

# A key starting with "_" is reserved for integrations, so the token never clashes with app data.
CSRF_KEY = "_csrf_token"
CSRF_FAILED = "CSRF token missing or incorrect"
MAX_FORM_BYTES = 16 * 1024

STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem;
  overflow-wrap: anywhere }
input { max-width: 100% }
table { display: block; overflow-x: auto; max-width: 100% }
nav a { margin-right: .8rem } form { display: inline-block; margin: .2rem .4rem .2rem 0 }
table { border-collapse: collapse } td, th { border: 1px solid #ccc; padding: .2rem .5rem }
.panel { background: #f4f4f8; border: 1px solid #ccd; padding: .5rem 1rem; margin-top: 2rem }
.msg { background: #eef8ee; border-left: 4px solid #4a4; padding: .4rem .8rem }
code { background: #eee; padding: 0 .2rem }
"""


def handle(session: Session) -> str:
    """A short, safe-to-show handle for the session: the first 8 characters of its public
    id, as "Your devices" and ``python -m asgi_sessions sessions`` list it (and as
    ``show --owner`` and ``revoke --only`` accept it). Never print a real session key."""
    public_id = session.public_id
    if public_id is None:
        return "(none: not saved yet)"
    return public_id[:8]


def csrf_token(session: Session) -> str:
    """This session's CSRF token, created on first use."""
    token = session.get(CSRF_KEY)
    if not isinstance(token, str):
        token = session[CSRF_KEY] = secrets.token_urlsafe(32)
    return token


def form(session: Session, action: str, button: str, fields: str = "") -> str:
    """A POST form carrying the CSRF token; ``fields`` must already be escaped HTML."""
    return (
        f'<form method="post" action="{e(action)}">{fields}'
        f'<input type="hidden" name="csrf_token" value="{e(csrf_token(session))}">'
        f"<button>{e(button)}</button></form>"
    )


def greeting_html(session: Session) -> str:
    user = session.get("user")
    colour = session.get("fav_color")
    greeting = f"Logged in as <b>{e(user)}</b>." if user else "Not logged in."
    if colour:
        greeting += f" Your favourite colour is <b>{e(colour)}</b>."
    return f'<p id="greeting">{greeting}</p>'


def panel_html(session: Session, writes: bool | None = None) -> str:
    """The session panel. ``writes``: whether this request changes the session, when the
    view knows better than ``session.modified`` (an in-place change of a list)."""
    rows = "".join(
        f"<tr><td><code>{e(key)}</code></td><td><code>{e(json.dumps(value))}</code></td></tr>"
        for key, value in session.items()
    )
    # The middleware saves after the view returns, so at render time `modified` is the best
    # available hint of whether this request will write the session.
    if writes is None:
        writes = session.modified
    said = "changes the session" if writes else "does not change the session"
    if session.session_key is None and not session:
        # Nothing stored and nothing to store (after a logout, say): no session, no expiry.
        state = "there is no session"
    else:
        expiry = session.get_expiry_date().strftime("%Y-%m-%d %H:%M:%S UTC")
        state = f"expires {e(expiry)}"
    return f"""<section class="panel" id="session-panel"><h2>Session</h2>
<p>Session id: <code id="key-fingerprint">{e(handle(session))}</code>
&middot; <span id="session-expiry">{state}</span></p>
<p id="session-writes">This request {said}.</p>
<table id="session-data"><tr><th>key</th><th>value</th></tr>{rows}</table></section>"""


def render(
    session: Session, title: str, body: str, *, writes: bool | None = None, status: int = 200
) -> HTMLResponse:
    """The page layout around ``body`` (already escaped HTML), with the session panel."""
    panel = panel_html(session, writes)
    nav = " ".join(
        f'<a href="{href}">{label}</a>'
        for href, label in [
            ("/", "Colour"),
            ("/comment", "Comment"),
            ("/login", "Log in / out"),
            ("/cart", "Cart (nested mutation)"),
            ("/together", "Two requests at once"),
            ("/sessions", "Your devices"),
        ]
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{e(title)} - asgi-server-sessions demo</title><style>{STYLE}</style></head><body>
<nav>{nav}</nav>{greeting_html(session)}<h1>{e(title)}</h1>{body}{panel}</body></html>"""
    return HTMLResponse(page, status_code=status)


def take_message(session: Session) -> str:
    """The message a POST left for the page it redirected to (post/redirect/get), once."""
    message = session.pop("message", None)
    return f'<p class="msg" id="message">{e(message)}</p>' if isinstance(message, str) else ""


def back_to(request: Request) -> str:
    """The page a form was posted from (same site only), else the home page."""
    referer = urlsplit(request.headers.get("referer", ""))
    path = referer.path
    if referer.netloc != request.url.netloc or not path.startswith("/") or path.startswith("//"):
        return "/"
    return path


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded form body (small forms only; avoids needing python-multipart)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return {}
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


Endpoint = Callable[[Request], Awaitable[Response]]
PostView = Callable[[Request, Session, dict[str, str]], Awaitable[Response]]


def post(view: PostView) -> Endpoint:
    """Wrap a POST view: load the session, parse the form, refuse it without the CSRF token."""

    async def endpoint(request: Request) -> Response:
        session = await request.state.session
        data = await read_form(request)
        expected = session.get(CSRF_KEY)
        given = data.get("csrf_token", "")
        # Bytes, because compare_digest refuses non-ASCII str (a crafted token would 500).
        if not isinstance(expected, str) or not hmac.compare_digest(
            given.encode(), expected.encode()
        ):
            return stale_form(request, session)
        return await view(request, session, data)

    return endpoint


def stale_form(request: Request, session: Session) -> Response:
    """A form whose token does not match this session: most often a tab opened before a
    log in or out (which gives the session a new key and token). Say so and lead back."""
    back = back_to(request)
    body = (
        '<p class="msg" id="message">This form has expired: the page was opened before your '
        "session changed (you logged in or out, maybe in another tab), so its security token "
        "no longer matches. Nothing was changed.</p>"
        f'<p><a id="back" href="{e(back)}">Go back and try again</a> (the page is loaded '
        f"afresh, with a form that works).</p><p><small>{e(CSRF_FAILED)}.</small></p>"
    )
    return render(session, "This form has expired", body, status=403)


def see_other(path: str) -> RedirectResponse:
    # 303 after a POST, so a reload does not submit the form again.
    return RedirectResponse(path, status_code=303)


# -- favourite colour (Django's session docs example) -------------------------------------


async def home(request: Request) -> Response:
    session = await request.state.session
    field = '<input name="fav_color" maxlength="40" placeholder="e.g. teal" required>'
    body = (
        "<p>Pick a favourite colour: it is kept in the session and shown on every page.</p>"
        + form(session, "/colour", "Save colour", field)
        + form(session, "/colour/clear", "Clear colour")
    )
    return render(session, "Favourite colour", body)


async def set_colour(request: Request, session: Session, data: dict[str, str]) -> Response:
    colour = data.get("fav_color", "").strip()[:40]
    if colour:
        session["fav_color"] = colour
    return see_other("/")


async def clear_colour(request: Request, session: Session, data: dict[str, str]) -> Response:
    session.pop("fav_color", None)
    return see_other("/")


# -- comment once (Django's has_commented example) ----------------------------------------


async def comment_page(request: Request) -> Response:
    session = await request.state.session
    field = '<input name="comment" maxlength="200" placeholder="Nice demo!" required>'
    body = (
        take_message(session)
        + "<p>You may comment once per session.</p>"
        + form(session, "/comment", "Post", field)
    )
    return render(session, "Comment", body)


async def post_comment(request: Request, session: Session, data: dict[str, str]) -> Response:
    if session.get("has_commented", False):
        message = "You've already commented."
    else:
        session["has_commented"] = True
        message = f"Thanks for your comment: \u201c{data.get('comment', '')[:200]}\u201d"
    session["message"] = message
    return see_other("/comment")  # post/redirect/get: a reload does not post again


# -- log in / log out ----------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    session = await request.state.session
    if session.get("user"):
        body = form(session, "/logout", "Log out")
    else:
        field = '<input name="username" maxlength="40" placeholder="username" required>'
        body = "<p>No passwords: it is a demo.</p>" + form(session, "/login", "Log in", field)
    return render(session, "Log in / out", take_message(session) + body)


async def login(request: Request, session: Session, data: dict[str, str]) -> Response:
    username = data.get("username", "").strip()[:40]
    if not username:
        return see_other("/login")
    before = handle(session)
    # A new key at login: a key planted before login (session fixation) is worth nothing.
    await session.cycle_key()
    session["user"] = username
    session.owner = username  # lets "Your devices" list and sign it out
    after = handle(session)
    session["message"] = f"Welcome, {username}. Session id before login: {before}, after: {after}."
    return see_other("/login")  # post/redirect/get: a reload does not log in again


async def logout(request: Request, session: Session, data: dict[str, str]) -> Response:
    before = handle(session)
    # Deletes the record and the cookie. No forms on the answer, so no new session starts.
    await session.flush()
    message = f"Logged out. Session id was {before}; there is no session now."
    body = f'<p class="msg" id="message">{e(message)}</p><p><a href="/">Home</a></p>'
    return render(session, "Logged out", body)


# -- the nested-mutation gotcha ------------------------------------------------------------


def cart_page_body(session: Session, note: str = "") -> str:
    cart = session.get("cart", [])
    note_html = f'<p class="msg" id="message">{e(note)}</p>' if note else ""
    return (
        f'{note_html}<p>Cart in this request: <code id="cart">{e(json.dumps(cart))}</code></p>'
        '<p>Both buttons run <code>session["cart"].append(...)</code>: the list changes in '
        "place, which does not mark the session modified (Django's nested-mutation gotcha). "
        "asgi-server-sessions still keeps it: the list was handed out by the session, so when the "
        "response starts its JSON is compared with what was loaded, and a changed list is "
        "saved (<code>detect_nested_changes=True</code>, the default; it costs one JSON "
        "encode of each list or dict a request reads). The second button also sets "
        "<code>session.modified = True</code>, the "
        "Django way, which writes every key. Add with each, then "
        '<a href="/cart" id="reload">reload this page</a>.</p>'
        + form(session, "/cart/in-place", "Append in place (kept)")
        + form(session, "/cart/modified", "Append + session.modified = True (kept)")
        + form(session, "/cart/empty", "Empty the cart")
    )


async def cart(request: Request) -> Response:
    session = await request.state.session
    # The list is stored first, so that the buttons change a value loaded from the store.
    session.setdefault("cart", [])
    return render(session, "Cart", cart_page_body(session))


async def append_in_place(request: Request, session: Session, data: dict[str, str]) -> Response:
    items = session.setdefault("cart", [])
    items.append(f"item {len(items) + 1}")
    note = (
        "Appended in place, without session.modified = True: found at save time, so "
        "reload and it is still there."
    )
    # `modified` is still False here; the changed list is found as the response starts.
    return render(session, "Cart", cart_page_body(session, note), writes=True)


async def append_modified(request: Request, session: Session, data: dict[str, str]) -> Response:
    items = session.setdefault("cart", [])
    items.append(f"item {len(items) + 1}")
    session.modified = True
    note = "Appended and set session.modified = True: reload and it is still there."
    return render(session, "Cart", cart_page_body(session, note))


async def empty_cart(request: Request, session: Session, data: dict[str, str]) -> Response:
    session["cart"] = []
    return see_other("/cart")


# -- two requests at once: each keeps its change ------------------------------------------

TOGETHER_SCRIPT = """
const token = document.querySelector('#together [name=csrf_token]').value;
const post = (path, fields) => fetch(path, {
  method: 'POST',
  headers: {'Content-Type': 'application/x-www-form-urlencoded'},
  body: new URLSearchParams({csrf_token: token, ...fields}),
});
// Show both answers, then the session's state as `pick` sees it, at `statuses` and `after`.
const show = async (answers, statuses, after, pick) => {
  const texts = await Promise.all(answers.map(r => r.text()));
  document.querySelector(statuses).textContent =
    answers.map((r, i) => r.status + ' ' + texts[i]).join(', ');
  const state = await (await fetch('/together/state')).json();
  document.querySelector(after).textContent = JSON.stringify(pick(state));
  // The greeting and the session panel were drawn before the click: draw them again.
  const fresh = new DOMParser().parseFromString(await (await fetch('/panel')).text(), 'text/html');
  for (const id of ['#greeting', '#session-panel']) {
    document.querySelector(id).replaceWith(fresh.querySelector(id));
  }
};
const newRound = () => String(Date.now()) + Math.random();
document.querySelector('#fire').addEventListener('click', async () => {
  const round = newRound();
  const colour = document.querySelector('#colour-choice').value;
  await show(await Promise.all([
    post('/together/colour', {round, colour}),
    post('/together/note', {round, note: 'written at the same time'}),
  ]), '#statuses', '#after', s => ({fav_color: s.fav_color, note: s.note, flash: s.flash}));
});
document.querySelector('#fire-cart').addEventListener('click', async () => {
  const round = newRound();
  await show(await Promise.all([
    post('/together/cart', {round, item: document.querySelector('#item-1').value}),
    post('/together/cart', {round, item: document.querySelector('#item-2').value}),
  ]), '#cart-statuses', '#cart-after', s => s.cart);
});
"""

# Each round's two requests meet here after loading the session, so that both have read the
# same stored session before either saves: the interleaving that loses an update when a
# store writes the whole session back.
_rounds: dict[str, asyncio.Barrier] = {}


async def meet(round_id: str) -> str:
    """Wait (up to 2 s) for the round's other request; say whether it came."""
    barrier = _rounds.setdefault(round_id[:64], asyncio.Barrier(2))
    try:
        async with asyncio.timeout(2):
            await barrier.wait()
        return "together"
    except TimeoutError:
        return "alone"  # the other request never came: carry on
    finally:
        if barrier.n_waiting == 0:
            _rounds.pop(round_id[:64], None)


async def together(request: Request) -> Response:
    session = await request.state.session
    session.setdefault("flash", "a message to consume")
    cart = session.get("cart", [])
    body = (
        "<p>Each button sends two requests to the server at the same time with "
        "<code>fetch</code>. Both load this session, wait for each other, then save. Here the "
        "first changes <code>fav_color</code>; the second sets <code>note</code> and pops "
        "<code>flash</code>. Each save writes only the keys its request changed, merged "
        "into the stored session, so every change is kept: a store that writes the whole "
        "session back would lose one of them.</p>"
        '<div id="together">'
        '<label>Colour <input id="colour-choice" value="teal"></label> '
        '<input type="hidden" name="csrf_token" value="' + e(csrf_token(session)) + '">'
        '<button id="fire" type="button">Send both at once</button>'
        '<p>Statuses: <code id="statuses">-</code></p>'
        '<p>The session afterwards: <code id="after">-</code></p>'
        "<h2>Two tabs, one cart</h2>"
        "<p>The same key this time: two requests, as from two tabs, each add an item to "
        '<code>cart</code> with <code>session.setdefault("cart", []).append(item)</code>, '
        "both after loading the same cart. A list that a request only appended to is saved "
        "as that change, &ldquo;append this item&rdquo;, which the store applies to the list "
        "it holds now: both items are kept (a store that wrote the whole list back would "
        "keep one).</p>"
        '<label>Tab 1 adds <input id="item-1" value="apple" maxlength="40"></label> '
        '<label>Tab 2 adds <input id="item-2" value="pear" maxlength="40"></label> '
        '<button id="fire-cart" type="button">Add both at once</button></div>'
        '<p>Statuses: <code id="cart-statuses">-</code></p>'
        f'<p>The cart afterwards: <code id="cart-after">{e(json.dumps(cart))}</code></p>'
        f"<script>{TOGETHER_SCRIPT}</script>"
    )
    return render(session, "Two requests at once", body)


async def together_colour(request: Request, session: Session, data: dict[str, str]) -> Response:
    met = await meet(data.get("round", ""))
    session["fav_color"] = data.get("colour", "teal")[:40]
    return PlainTextResponse(met)


async def together_note(request: Request, session: Session, data: dict[str, str]) -> Response:
    met = await meet(data.get("round", ""))
    session["note"] = data.get("note", "")[:200]
    session.pop("flash", None)
    return PlainTextResponse(met)


async def together_cart(request: Request, session: Session, data: dict[str, str]) -> Response:
    met = await meet(data.get("round", ""))
    # An append to the list this request loaded (or created): merged with the other's.
    session.setdefault("cart", []).append(data.get("item", "")[:40])
    return PlainTextResponse(met)


async def panel(request: Request) -> Response:
    """The greeting and the session panel alone, as they are now (read-only)."""
    session = await request.state.session
    return HTMLResponse(greeting_html(session) + panel_html(session))


async def together_state(request: Request) -> Response:
    session = await request.state.session
    keys = ("fav_color", "note", "flash", "cart")
    return JSONResponse({key: session.get(key) for key in keys})


# -- your sessions: revoke one, or log out everywhere else --------------------------------


def when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


async def sessions_page(request: Request) -> Response:
    """Your devices: where this user is signed in, as GitHub and Google show it."""
    session = await request.state.session
    user = session.get("user")
    if not user:
        body = '<p id="message">Log in to see your devices: <a href="/login">log in</a>.</p>'
        return render(session, "Your devices", body)
    rows = []
    for owned in await store.list_sessions(user):
        if owned.public_id == session.public_id:
            action = '<b class="this-device">this device</b>'
        else:
            field = f'<input type="hidden" name="public_id" value="{e(owned.public_id)}">'
            action = form(session, "/sessions/revoke", "Sign out", field)
        rows.append(
            '<tr class="session-row">'
            f'<td class="device" title="{e(owned.user_agent or "")}">{e(owned.label)}</td>'
            f'<td class="network">{e(owned.ip or "-")}</td>'
            f'<td class="last-seen">{e(when(owned.last_seen))}</td>'
            f"<td>{e(when(owned.created))}</td>"
            f'<td><code class="public-id">{e(owned.public_id[:8])}</code></td>'
            f"<td>{action}</td></tr>"
        )
    body = (
        '<table id="sessions"><tr><th>device</th><th>network</th><th>last seen</th>'
        f"<th>signed in</th><th>id</th><th></th></tr>{''.join(rows)}</table><p>"
        + form(session, "/sessions/revoke-others", "Sign out everywhere else")
        + "</p><p><small>Last seen moves when the session is saved. The network is the "
        "/24 (IPv4) or /48 (IPv6) the device signed in from, never the whole "
        "address.</small></p>"
    )
    return render(session, "Your devices", body)


async def revoke(request: Request, session: Session, data: dict[str, str]) -> Response:
    user = session.get("user")
    # Never the current one from here: that is what "Log out" is for.
    if user and data.get("public_id") != session.public_id:
        await store.revoke(user, data.get("public_id", ""))
    return see_other("/sessions")


async def revoke_others(request: Request, session: Session, data: dict[str, str]) -> Response:
    user = session.get("user")
    if user:
        await store.revoke_all(user, keep=session.public_id)
    return see_other("/sessions")


# -- metrics (the [otel] extra) -----------------------------------------------------------


def metrics_reader() -> tuple[Any, Any] | None:
    """``(an in-memory metric reader, Telemetry)`` when ``asgi-server-sessions[otel]`` and
    ``opentelemetry-sdk`` are installed; ``None`` otherwise (``make run`` installs neither,
    and then nothing from OpenTelemetry is imported)."""
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        from asgi_sessions.telemetry import Telemetry
    except ImportError:
        return None
    reader = InMemoryMetricReader()
    return reader, Telemetry(meter_provider=MeterProvider(metric_readers=[reader]))


METRICS = metrics_reader()
SHORT = {
    "db.operation.name": "operation",
    "asgi_sessions.event.type": "event",
    "http.response.status_code": "status",
    "error.type": "error",
}


async def metrics_demo(request: Request) -> Response:
    session = await request.state.session
    if METRICS is None:
        body = (
            "<p>Metrics need OpenTelemetry, which <code>make run</code> does not install: "
            "<code>.venv/bin/pip install '.[otel]' opentelemetry-sdk</code>, then restart "
            "the demo and click around.</p>"
        )
        return render(session, "Session metrics", body)
    reader = METRICS[0]
    rows = []
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    labels = ", ".join(
                        f"{SHORT.get(k, k)}={v}"
                        for k, v in sorted(point.attributes.items())
                        if k != "asgi_sessions.store"  # always "sqlite" here
                    )
                    if hasattr(point, "bucket_counts"):  # a histogram: count and mean
                        mean = point.sum / point.count if point.count else 0.0
                        shown = f"{mean * 1000:.2f} ms" if metric.unit == "s" else f"{mean:.0f} B"
                        value = f"{point.count} (mean {shown})"
                    else:
                        value = str(point.value)
                    rows.append(
                        f"<tr><td><code>{e(metric.name.removeprefix('asgi_sessions.'))}</code>"
                        f"</td><td>{e(labels)}</td><td>{e(value)}</td></tr>"
                    )
    body = (
        "<p>What the session layer recorded since the demo started (an in-memory reader; "
        "in production, an exporter sends these to your metrics backend).</p>"
        "<table id='metrics'><tr><th>metric</th><th>attributes</th><th>value</th></tr>"
        + ("".join(rows) or "<tr><td colspan=3>nothing yet: click around</td></tr>")
        + "</table>"
    )
    return render(session, "Session metrics", body)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # We created the store, so we close it (the middleware closes only stores it made).
    async with store:
        yield


routes = [
    Route("/", home),
    Route("/colour", post(set_colour), methods=["POST"]),
    Route("/colour/clear", post(clear_colour), methods=["POST"]),
    Route("/comment", comment_page),
    Route("/comment", post(post_comment), methods=["POST"]),
    Route("/login", login_page),
    Route("/login", post(login), methods=["POST"]),
    Route("/logout", post(logout), methods=["POST"]),
    Route("/cart", cart),
    Route("/cart/in-place", post(append_in_place), methods=["POST"]),
    Route("/cart/modified", post(append_modified), methods=["POST"]),
    Route("/cart/empty", post(empty_cart), methods=["POST"]),
    Route("/together", together),
    Route("/together/colour", post(together_colour), methods=["POST"]),
    Route("/together/note", post(together_note), methods=["POST"]),
    Route("/together/cart", post(together_cart), methods=["POST"]),
    Route("/together/state", together_state),
    Route("/panel", panel),
    Route("/sessions", sessions_page),
    Route("/sessions/revoke", post(revoke), methods=["POST"]),
    Route("/sessions/revoke-others", post(revoke_others), methods=["POST"]),
    Route("/metrics-demo", metrics_demo),
]

app = Starlette(
    routes=routes,
    middleware=[
        Middleware(
            SessionMiddleware,
            secret_key=SECRET_KEY,
            store=store,
            telemetry=METRICS[1] if METRICS is not None else None,
            # "Your devices" shows the network each device signed in from, never the
            # whole address (personal data): the /24 or /48 it falls in.
            record_ip=(24, 48),
        )
    ],
    lifespan=lifespan,
)

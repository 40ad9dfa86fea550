"""The demo app in a real Chromium: every flow a reader of the demo would click through.

Each test uses a fresh browser profile and its own username, because the server (and its
SQLite file) is shared by the whole module.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Cookie, Page, Response

    from tests.e2e.conftest import DemoServer

    Screenshot = Callable[[Page, str], None]
    NewContext = Callable[..., BrowserContext]

pytestmark = pytest.mark.e2e

CSRF_FAILED = "CSRF token missing or incorrect"


def unique_user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def session_cookie(context: BrowserContext) -> Cookie | None:
    return next((c for c in context.cookies() if c["name"] == "session"), None)


def greeting(page: Page) -> str:
    return page.locator("#greeting").inner_text()


def text(page: Page, selector: str) -> str:
    return page.locator(selector).inner_text()


def click_and_load(page: Page, selector: str) -> Response | None:
    """Click a button or link and wait for the page it loads, so no assertion reads the old page."""
    with page.expect_navigation() as navigation:
        page.click(selector)
    return navigation.value


def set_colour(page: Page, colour: str) -> None:
    page.goto("/")
    page.fill("input[name=fav_color]", colour)
    click_and_load(page, "text=Save colour")


def log_in(page: Page, username: str) -> None:
    page.goto("/login")
    page.fill("input[name=username]", username)
    click_and_load(page, "button:has-text('Log in')")


def test_the_favourite_colour_is_shown_on_later_pages_until_cleared(
    page: Page, screenshot: Screenshot
) -> None:
    set_colour(page, "teal")
    assert "Your favourite colour is teal." in greeting(page)

    click_and_load(page, "text=Comment")
    assert "Your favourite colour is teal." in greeting(page)
    assert '"teal"' in text(page, "#session-data")
    screenshot(page, "colour")

    page.goto("/")
    click_and_load(page, "text=Clear colour")
    assert "favourite colour" not in greeting(page)


def test_user_values_are_escaped_not_rendered_as_html(page: Page) -> None:
    set_colour(page, "<i id=injected>red</i>")

    assert page.locator("#injected").count() == 0
    assert "<i id=injected>red</i>" in greeting(page)


def test_the_session_cookie_is_http_only_lax_and_survives_a_reload(
    context: BrowserContext, page: Page, screenshot: Screenshot
) -> None:
    set_colour(page, "indigo")

    cookie = session_cookie(context)
    assert cookie is not None
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert "session=" not in page.evaluate("document.cookie")

    page.reload()
    assert "Your favourite colour is indigo." in greeting(page)
    screenshot(page, "cookie")


def test_the_session_survives_a_server_restart(
    page: Page, demo_server: DemoServer, screenshot: Screenshot
) -> None:
    set_colour(page, "olive")

    demo_server.restart()

    page.goto("/")
    assert "Your favourite colour is olive." in greeting(page)
    screenshot(page, "restart")


def post_comment(page: Page, comment: str) -> str:
    page.goto("/comment")
    page.fill("input[name=comment]", comment)
    click_and_load(page, "button:has-text('Post')")
    return text(page, "#message")


def test_a_second_comment_is_refused(page: Page, screenshot: Screenshot) -> None:
    assert post_comment(page, "Nice demo!") == "Thanks for your comment: \u201cNice demo!\u201d"

    assert post_comment(page, "Me again") == "You've already commented."
    screenshot(page, "comment")


def test_login_cycles_the_session_key_and_keeps_the_data(
    new_context: NewContext, screenshot: Screenshot
) -> None:
    context, attacker = new_context(), new_context()
    page = context.new_page()
    set_colour(page, "navy")
    page.goto("/login")
    before = text(page, "#key-fingerprint")
    planted = session_cookie(context)
    assert planted is not None

    log_in(page, "alice")

    after = text(page, "#key-fingerprint")
    assert re.fullmatch("[0-9a-f]{8}", before)
    assert re.fullmatch("[0-9a-f]{8}", after)
    assert before != after
    assert f"before login: {before}, after: {after}." in text(page, "#message")
    assert "Logged in as alice." in greeting(page)
    assert "Your favourite colour is navy." in greeting(page)
    screenshot(page, "login")

    # Session fixation: whoever knew the pre-login cookie does not get the logged-in session.
    attacker.add_cookies(
        [{"name": "session", "value": planted["value"], "domain": "127.0.0.1", "path": "/"}]
    )
    other = attacker.new_page()
    other.goto("/")
    assert greeting(other) == "Not logged in."


def test_logout_flushes_the_session_and_removes_the_cookie(
    context: BrowserContext, page: Page, screenshot: Screenshot
) -> None:
    set_colour(page, "maroon")
    log_in(page, unique_user())
    before = text(page, "#key-fingerprint")

    page.goto("/login")
    click_and_load(page, "button:has-text('Log out')")

    assert f"Session id was {before}" in text(page, "#message")
    assert session_cookie(context) is None
    assert greeting(page) == "Not logged in."
    # No session, so no expiry date under it.
    assert text(page, "#session-expiry") == "there is no session"
    assert "expires" not in text(page, "#session-panel")
    screenshot(page, "logout")
    page.goto("/sessions")
    assert "Log in to see your devices" in text(page, "#message")


def test_a_nested_change_is_kept_with_or_without_modified_after_reload(
    page: Page, screenshot: Screenshot
) -> None:
    page.goto("/cart")
    assert text(page, "#cart") == "[]"

    click_and_load(page, "text=Append in place (kept)")
    assert text(page, "#cart") == '["item 1"]'
    # modified is False, but the changed list is found and saved: the panel says so.
    assert text(page, "#session-writes") == "This request changes the session."
    click_and_load(page, "#reload")
    assert text(page, "#cart") == '["item 1"]'

    click_and_load(page, "text=session.modified = True (kept)")
    assert text(page, "#cart") == '["item 1", "item 2"]'
    assert text(page, "#session-writes") == "This request changes the session."
    click_and_load(page, "#reload")
    assert text(page, "#cart") == '["item 1", "item 2"]'
    screenshot(page, "cart")


def test_two_requests_sent_at_once_each_keep_their_change(
    page: Page, screenshot: Screenshot
) -> None:
    page.goto("/together")
    page.fill("#colour-choice", "plum")
    page.click("#fire")
    page.wait_for_function("document.querySelector('#after').textContent !== '-'")
    # Both requests loaded the session before either saved ("together").
    assert text(page, "#statuses") == "200 together, 200 together"
    after = json.loads(text(page, "#after"))
    assert after == {"fav_color": "plum", "note": "written at the same time", "flash": None}
    # The greeting and session panel are drawn again after the click, without a reload.
    page.wait_for_function("document.querySelector('#greeting').textContent.includes('plum')")
    assert '"written at the same time"' in text(page, "#session-data")
    assert "flash" not in text(page, "#session-data")
    page.reload()
    assert "plum" in text(page, "#greeting")
    screenshot(page, "together")


ADD_TWO_AT_ONCE = """async ([first, second]) => {
  const token = document.querySelector('#together [name=csrf_token]').value;
  const round = 'e2e-' + Math.random();
  const add = item => fetch('/together/cart', {
    method: 'POST',
    headers: {'Content-Type': 'application/x-www-form-urlencoded'},
    body: new URLSearchParams({csrf_token: token, round, item}),
  });
  const answers = await Promise.all([add(first), add(second)]);
  return Promise.all(answers.map(async r => r.status + ' ' + await r.text()));
}"""


def test_two_tabs_adding_to_one_cart_at_once_keep_both_items(
    page: Page, screenshot: Screenshot
) -> None:
    page.goto("/together")
    assert text(page, "#cart-after") == "[]"
    page.fill("#item-1", "apple")
    page.fill("#item-2", "pear")
    page.click("#fire-cart")
    page.wait_for_function("document.querySelector('#cart-statuses').textContent !== '-'")
    # Both appends loaded the same (empty) cart before either saved ("together").
    assert text(page, "#cart-statuses") == "200 together, 200 together"
    assert sorted(json.loads(text(page, "#cart-after"))) == ["apple", "pear"]
    page.wait_for_function("document.querySelector('#session-data').textContent.includes('pear')")
    screenshot(page, "together-cart")

    # Two fetch calls of the test's own, in parallel from the page, on the stored cart.
    answers = page.evaluate(ADD_TWO_AT_ONCE, ["kiwi", "plum"])
    assert answers == ["200 together", "200 together"]
    page.reload()
    assert sorted(json.loads(text(page, "#cart-after"))) == ["apple", "kiwi", "pear", "plum"]


def test_a_form_posted_without_its_csrf_token_is_refused(
    page: Page, screenshot: Screenshot
) -> None:
    page.goto("/")
    page.evaluate("document.querySelector('form[action=\"/colour\"] [name=csrf_token]').remove()")
    page.fill("input[name=fav_color]", "crimson")
    response = click_and_load(page, "text=Save colour")

    assert response is not None
    assert response.status == 403
    assert "This form has expired" in text(page, "#message")
    assert CSRF_FAILED in page.content()
    screenshot(page, "csrf")
    page.goto("/")
    assert "crimson" not in greeting(page)


def test_a_post_with_a_wrong_csrf_token_is_refused(page: Page) -> None:
    page.goto("/")  # a session, hence a real token, exists: the wrong one must still fail

    response = page.request.post("/colour", form={"fav_color": "red", "csrf_token": "guess"})

    assert response.status == 403
    assert CSRF_FAILED in response.text()


def test_your_sessions_lists_each_browser_and_revokes_another(
    new_context: NewContext, screenshot: Screenshot
) -> None:
    user = unique_user()
    laptop, phone = new_context().new_page(), new_context().new_page()
    log_in(laptop, user)
    log_in(phone, user)

    laptop.goto("/sessions")
    assert laptop.locator(".session-row").count() == 2
    assert laptop.locator(".session-row:has-text('this device')").count() == 1
    # One handle per session: the panel's id is this browser's row's public id prefix.
    own = text(laptop, ".session-row:has-text('this device') .public-id")
    assert re.fullmatch("[0-9a-f]{8}", own)
    assert text(laptop, "#key-fingerprint") == own
    screenshot(laptop, "sessions")
    click_and_load(laptop, ".session-row button:has-text('Sign out')")

    assert laptop.locator(".session-row").count() == 1
    phone.goto("/sessions")
    assert greeting(phone) == "Not logged in."


def test_log_out_everywhere_else_logs_the_other_browser_out(
    new_context: NewContext, screenshot: Screenshot
) -> None:
    user = unique_user()
    laptop, phone, tablet = (new_context().new_page() for _ in range(3))
    for page in (laptop, phone, tablet):
        log_in(page, user)

    laptop.goto("/sessions")
    assert laptop.locator(".session-row").count() == 3
    click_and_load(laptop, "text=Sign out everywhere else")

    assert laptop.locator(".session-row").count() == 1
    assert f"Logged in as {user}." in greeting(laptop)
    screenshot(laptop, "log-out-everywhere-else")
    for other in (phone, tablet):
        other.goto("/")  # not reload(): that would re-submit the login form
        assert greeting(other) == "Not logged in."


def test_a_stale_tabs_form_gets_a_friendly_page_that_leads_back(
    context: BrowserContext, screenshot: Screenshot
) -> None:
    stale, other = context.new_page(), context.new_page()
    stale.goto("/")  # its form carries this session's token
    log_in(other, unique_user())
    other.goto("/login")
    click_and_load(other, "button:has-text('Log out')")  # the token goes with the session

    stale.fill("input[name=fav_color]", "olive")
    response = click_and_load(stale, "text=Save colour")

    assert response is not None and response.status == 403
    assert "This form has expired" in text(stale, "#message")
    assert "<title>This form has expired" in stale.content()
    screenshot(stale, "stale-form")
    click_and_load(stale, "#back")
    assert stale.url.endswith("/")
    set_colour(stale, "olive")  # the fresh page's form works
    assert "olive" in greeting(stale)


@pytest.mark.parametrize("flow", ["comment", "login"])
def test_comment_and_login_redirect_after_the_post_so_a_reload_does_not_resubmit(
    flow: str, page: Page
) -> None:
    if flow == "comment":
        message = post_comment(page, "Once")
        assert message.startswith("Thanks for your comment")
        expected_path = "/comment"
    else:
        log_in(page, unique_user())
        message = text(page, "#message")
        assert message.startswith("Welcome")
        expected_path = "/login"
    assert page.url.endswith(expected_path)
    response = page.reload()  # a GET: no "confirm form resubmission"
    assert response is not None and response.request.method == "GET"
    assert page.locator("#message").count() == 0  # the message was shown once


PHONE_PAGES = ["/", "/comment", "/login", "/cart", "/together", "/sessions"]


def test_every_page_fits_a_375_px_phone_screen(
    browser: Browser, demo_server: DemoServer, screenshot: Screenshot
) -> None:
    context = browser.new_context(base_url=demo_server.url, viewport={"width": 375, "height": 740})
    try:
        page = context.new_page()
        log_in(page, unique_user())  # so "Your sessions" has its widest table
        page.goto("/cart")
        click_and_load(page, "text=Append in place (kept)")
        for path in PHONE_PAGES:
            page.goto(path)
            assert page.locator("meta[name=viewport]").count() == 1
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 375, f"{path} is {width} px wide"
            screenshot(page, "phone" + path.replace("/", "-").rstrip("-"))
    finally:
        context.close()

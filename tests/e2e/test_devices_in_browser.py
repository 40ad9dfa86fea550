"""The demo's "Your devices" page in Chromium: two browser profiles act as two devices."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.e2e.test_demo_in_browser import click_and_load, greeting, log_in, text, unique_user

if TYPE_CHECKING:
    from tests.e2e.test_demo_in_browser import NewContext, Screenshot

LAPTOP = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
PHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)


def test_each_device_sees_both_with_its_own_marked_and_signs_the_other_out(
    new_context: NewContext, screenshot: Screenshot
) -> None:
    user = unique_user()
    laptop = new_context(user_agent=LAPTOP).new_page()
    phone = new_context(user_agent=PHONE).new_page()
    log_in(laptop, user)
    log_in(phone, user)

    laptop.goto("/sessions")
    rows = laptop.locator(".session-row")
    assert rows.count() == 2
    assert [text(laptop, f".session-row >> nth={i} >> .device") for i in range(2)] == [
        "Firefox on Linux",
        "Safari on iPhone",
    ]
    assert text(laptop, ".session-row:has(.this-device) .device") == "Firefox on Linux"
    # The demo keeps only the network: the loopback /24, never the whole address.
    assert text(laptop, ".session-row >> nth=0 >> .network") == "127.0.0.0/24"
    assert text(laptop, ".session-row >> nth=0 >> .last-seen").endswith(" UTC")
    screenshot(laptop, "devices")

    phone.goto("/sessions")
    assert text(phone, ".session-row:has(.this-device) .device") == "Safari on iPhone"

    # From the phone: sign the laptop out.
    click_and_load(phone, ".session-row:has-text('Firefox on Linux') button:has-text('Sign out')")
    assert phone.locator(".session-row").count() == 1
    laptop.goto("/")
    assert greeting(laptop) == "Not logged in."


def test_sign_out_everywhere_else_keeps_only_this_device(new_context: NewContext) -> None:
    user = unique_user()
    laptop = new_context(user_agent=LAPTOP).new_page()
    phone = new_context(user_agent=PHONE).new_page()
    log_in(laptop, user)
    log_in(phone, user)

    phone.goto("/sessions")
    click_and_load(phone, "text=Sign out everywhere else")

    assert phone.locator(".session-row").count() == 1
    assert text(phone, ".session-row .device") == "Safari on iPhone"
    laptop.goto("/")
    assert greeting(laptop) == "Not logged in."

"""Switching the interface to English in the page header, and the choice surviving a new login.

Saves language-english-home.png and language-english-login.png under the screenshot folder.
"""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.org.models import User

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def test_header_switch_turns_english(page, browser_login, screenshot):
    browser_login(page, "tj_admin")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    assert page.get_by_role("button", name="退出").is_visible()

    with page.expect_navigation():
        page.locator("header").get_by_role("button", name="English").click()

    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("main h1").inner_text().startswith("Welcome, ")
    assert page.locator("header nav").get_by_role("link", name="Customer files").is_visible()
    assert page.locator("header").get_by_role("button", name="English").get_attribute("aria-current") == "true"
    screenshot(page, "language-english-home")

    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    # The cookie keeps the login page English for this browser.
    assert page.locator("main h1").inner_text() == "Sign in"
    screenshot(page, "language-english-login")

    # Without the cookie, the login page is Chinese, and the choice saved on the user applies after login.
    page.context.clear_cookies()
    browser_login(page, "tj_admin")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.get_by_role("button", name="Sign out").is_visible()


def test_login_page_switch(page, screenshot):
    page.goto("/login")
    with page.expect_navigation():
        page.get_by_role("button", name="English").click()

    assert page.url.endswith("/login")
    assert page.get_by_label("Username").is_visible()
    assert page.get_by_label("Password").is_visible()

    with page.expect_navigation():
        page.get_by_role("button", name="中文").click()
    assert page.locator("main h1").inner_text() == "登录"


# Box of each top-bar menu item, with the scroll and client widths of its label.
MENU_ITEMS_JS = """() => [...document.querySelectorAll('header.topbar nav a')].map((link) => {
  const box = link.getBoundingClientRect();
  return { label: link.textContent.trim(), left: box.left, right: box.right, top: box.top, bottom: box.bottom,
           scrollWidth: link.scrollWidth, clientWidth: link.clientWidth };
})"""


def _overlap(first, second):
    apart_x = first["right"] <= second["left"] or second["right"] <= first["left"]
    apart_y = first["bottom"] <= second["top"] or second["bottom"] <= first["top"]
    return not (apart_x or apart_y)


# The group administrator and a company administrator have the longest menus.
@pytest.mark.parametrize("username", ["hq_admin", "tj_admin"])
@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_topbar_menu_items_fit(page, browser_login, username, locale):
    db.session.execute(sa.update(User).where(User.username == username).values(locale=locale))
    db.session.commit()
    browser_login(page, username)
    for width in (1280, 1366):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto("/")
        viewport_width = page.evaluate("document.documentElement.clientWidth")

        items = page.evaluate(MENU_ITEMS_JS)

        assert len(items) >= 10, items
        for item in items:
            assert item["left"] >= 0, (width, item)
            assert item["right"] <= viewport_width, (width, item)
            assert item["scrollWidth"] <= item["clientWidth"], (width, item)
            assert page.get_by_role("link", name=item["label"], exact=True).first.is_visible(), (width, item)
        overlaps = [(a["label"], b["label"]) for i, a in enumerate(items) for b in items[i + 1:] if _overlap(a, b)]
        assert overlaps == [], width

"""Switching the interface to English in the page header, and the choice surviving a new login.

Saves language-english-home.png and language-english-login.png under the screenshot folder.
"""

import pytest

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

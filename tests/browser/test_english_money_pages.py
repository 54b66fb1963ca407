"""Invoice settings and the billing desk in English, driven through Chromium.

Saves english-invoice-settings.png and english-billing-arrears.png under the screenshot folder.
"""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def _switch_to_english(page, browser_login, username):
    browser_login(page, username)
    with page.expect_navigation():
        page.locator("header").get_by_role("button", name="English").click()
    assert page.locator("html").get_attribute("lang") == "en"


def test_invoice_settings_in_english(page, browser_login, screenshot):
    _switch_to_english(page, browser_login, "tj_admin")
    page.goto("/invoicing/settings")
    assert page.locator("main h1").inner_text().startswith("Invoice settings")
    page.get_by_label("Tax-control paper invoice").check()
    page.get_by_label("VAT rate for non-residential heat (%)").fill("9")
    with page.expect_navigation():
        page.get_by_role("button", name="Save invoice settings").click()
    assert "Invoice settings saved." in page.locator(".flash").inner_text()
    assert page.get_by_label("Tax-control paper invoice").is_checked()
    screenshot(page, "english-invoice-settings")


def test_invoice_settings_error_in_english(page, browser_login):
    _switch_to_english(page, browser_login, "tj_admin")
    page.goto("/invoicing/settings")
    page.get_by_label("Self-printed receipt", exact=True).check()
    page.get_by_label("VAT rate for non-residential heat (%)").fill("abc")
    with page.expect_navigation():
        page.get_by_role("button", name="Save invoice settings").click()
    flash = page.locator(".flash").inner_text()
    assert 'The non-residential VAT rate "abc" is not a number' in flash


def test_arrears_work_list_in_english(page, browser_login, screenshot):
    _switch_to_english(page, browser_login, "tj_admin")
    page.goto("/billing/arrears")
    assert page.locator("main h1").inner_text() == "Collection work list"
    ageing = page.locator("#ageing").inner_text()
    assert "Current season" in ageing
    assert "Imported prior arrears (season unknown)" in ageing
    assert page.get_by_role("button", name="Filter").is_visible()
    screenshot(page, "english-billing-arrears")

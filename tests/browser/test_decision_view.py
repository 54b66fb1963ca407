"""The settings page in a browser: the read-only escalation decision table (JavaScript off) and the netting option."""

import pytest

from tests.browser.conftest import ACTION_TIMEOUT_MS

pytestmark = pytest.mark.browser


def test_rules_table_without_javascript(_browser, live_server, browser_login, screenshot):
    context = _browser.new_context(base_url=live_server, java_script_enabled=False, locale="zh-CN", viewport={"width": 1280, "height": 800})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    try:
        browser_login(page, "tj_admin")
        page.goto("/processes/settings")
        screenshot(page, "escalation-settings")
        with page.expect_navigation():
            page.locator("#rule-waiver").get_by_role("link", name="查看规则表").click()
        assert page.url.endswith("/processes/decisions/waiver_escalation")
        rows = page.locator("#decision-rules tbody tr")
        # The default waiver table: amount above 1000, share above 30 %, category outside policy.
        assert rows.count() == 3
        assert rows.nth(0).get_attribute("id") == "rule_amount"
        assert "> 1000" in rows.nth(0).inner_text()
        assert "> 30" in rows.nth(1).inner_text()
        assert "第 1 版" in page.locator("h1").inner_text()
        screenshot(page, "decision-table")
    finally:
        context.close()


def test_netting_option_saved(page, browser_login, screenshot, demo):
    from app.processes.options import process_option

    browser_login(page, "tj_admin")
    page.goto("/processes/settings")
    options = page.locator("#options")
    options.get_by_label("按全额追补", exact=False).check()
    with page.expect_navigation():
        options.get_by_role("button", name="保存计算方式").click()
    assert "已保存本公司的业务计算方式" in page.locator(".flash").inner_text()
    assert page.locator("#options input[value=full]").is_checked()
    screenshot(page, "process-options")
    assert process_option(demo["TJ"].id, "back_charge_netting") == "full"
    assert process_option(demo["QD"].id, "back_charge_netting") == "difference"

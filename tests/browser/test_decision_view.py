"""The read-only view of a company's escalation decision table, in a browser with JavaScript off."""

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

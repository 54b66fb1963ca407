"""The working calendar page and the template lineage page driven through Chromium."""

from datetime import date

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.processes.models import CalendarDay

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def test_calendar_page_adds_a_holiday(page, browser_login, screenshot, demo):
    browser_login(page, "tj_admin")
    page.goto("/processes/calendar?year=2025")
    assert page.locator("#calendar-days tr.calendar-holiday").count() > 20
    page.get_by_label("日期").fill("2025-10-09")
    page.get_by_label("类型").select_option("holiday")
    page.get_by_label("名称").fill("供热调试")
    with page.expect_navigation():
        page.get_by_role("button", name="保存", exact=True).click()
    assert "已将 2025-10-09 设为「休息（节假日）」" in page.content()
    row = page.locator("#calendar-days tr", has_text="2025-10-09")
    assert "供热调试" in row.inner_text()
    screenshot(page, "working-calendar")
    stored = db.session.scalar(sa.select(CalendarDay).where(CalendarDay.company_id == demo["TJ"].id, CalendarDay.day == date(2025, 10, 9)))
    assert stored.kind == "holiday"


def test_template_lineage_page(page, browser_login, screenshot, demo):
    browser_login(page, "hq_admin")
    page.goto("/processes/design")
    with page.expect_navigation():
        page.get_by_role("link", name="查看各分公司流程与模板的差异").click()
    rows = page.locator('#template-drift tr[data-process-type="suspension"]')
    assert rows.count() == 4
    assert "已是最新模板" in rows.first.inner_text()
    screenshot(page, "template-lineage")

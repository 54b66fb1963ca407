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


def test_calendar_page_imports_a_file(page, browser_login, screenshot, demo, tmp_path):
    # A generated list for 2031 with made-up days, not an official one.
    bad = tmp_path / "2031-bad.csv"
    bad.write_text("日期,类型,名称\n2031-10-01,假日,测试节\n2031-10-06,调休工作日,测试节调休上班\n", encoding="utf-8")
    good = tmp_path / "2031.csv"
    good.write_text("日期,类型,名称\n2031-10-01,假日,测试节\n2031-10-02,假日,测试节\n2031-10-04,调休工作日,测试节调休上班\n", encoding="utf-8")
    browser_login(page, "tj_admin")
    page.goto("/processes/calendar?year=2031")

    page.get_by_label("放假安排文件").set_input_files(str(bad))
    with page.expect_navigation():
        page.get_by_role("button", name="导入文件").click()
    errors = page.locator("#calendar-import-errors li")
    assert errors.count() == 1
    assert errors.first.inner_text().startswith("第 3 行「日期」值「2031-10-06」：是星期一，本来就上班")
    assert "未导入任何日期" in page.content()
    screenshot(page, "working-calendar-import-errors")

    page.get_by_label("放假安排文件").set_input_files(str(good))
    with page.expect_navigation():
        page.get_by_role("button", name="导入文件").click()
    assert "已导入 2031 年放假安排 3 天（TJ）：新增 3 条、修改 0 条" in page.content()
    assert page.locator("#calendar-days tr.calendar-holiday").count() == 2
    assert page.locator("#calendar-days tr.calendar-workday").count() == 1
    screenshot(page, "working-calendar-import")
    stored = db.session.scalars(sa.select(CalendarDay.day).where(CalendarDay.company_id == demo["TJ"].id, CalendarDay.day >= date(2031, 1, 1))).all()
    assert sorted(stored) == [date(2031, 10, 1), date(2031, 10, 2), date(2031, 10, 4)]


def test_template_lineage_page(page, browser_login, screenshot, demo):
    browser_login(page, "hq_admin")
    page.goto("/processes/design")
    with page.expect_navigation():
        page.get_by_role("link", name="查看各分公司流程与模板的差异").click()
    rows = page.locator('#template-drift tr[data-process-type="suspension"]')
    assert rows.count() == 4
    assert "已是最新模板" in rows.first.inner_text()
    screenshot(page, "template-lineage")

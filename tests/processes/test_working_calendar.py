"""The company working calendar: public holidays and adjusted working days in deadlines, and the page that edits them."""

from datetime import date, datetime, timedelta, timezone

import chinese_calendar
import sqlalchemy as sa

from app.clock import LOCAL_TIME
from app.extensions import db
from app.processes.calendar import add_working_days, published_days, seed_calendar
from app.processes.models import CalendarDay
from app.processes.timers import deadline

UTC = timezone.utc


def _beijing(year, month, day, hour=10):
    return datetime(year, month, day, hour, 0, tzinfo=LOCAL_TIME)


def _days(company_id, year):
    return {
        row.day: row for row in db.session.scalars(
            sa.select(CalendarDay).where(CalendarDay.company_id == company_id, sa.extract("year", CalendarDay.day) == year)
        )
    }


def test_demo_seeds_published_days(demo):
    days = _days(demo["TJ"].id, 2025)
    assert days[date(2025, 10, 1)].kind == "holiday"
    assert days[date(2025, 10, 1)].name == "国庆节"
    assert days[date(2025, 10, 6)].name == "中秋节"
    assert days[date(2025, 9, 28)].kind == "workday"
    assert days[date(2025, 10, 11)].kind == "workday"
    assert date(2025, 10, 9) not in days
    assert len(_days(demo["QD"].id, 2026)) == len(published_days({2026}))


def test_national_day_worked_example(demo):
    tj = demo["TJ"].id
    # Tuesday 2025-09-30 10:00: 1 to 8 October are off, Thursday 9 and Friday 10 October are
    # working days 1 and 2, and Saturday 11 October is worked in exchange (调休), so it is day 3.
    assert add_working_days(tj, _beijing(2025, 9, 30), 3) == _beijing(2025, 10, 11).astimezone(UTC)
    # Saturday 2025-09-27 + 1 working day = Sunday 28 September, a working day in exchange.
    assert add_working_days(tj, _beijing(2025, 9, 27), 1) == _beijing(2025, 9, 28).astimezone(UTC)
    # The escalation timer of 3 working days from the same moment.
    assert deadline(tj, "approval_escalation", _beijing(2025, 9, 30)) == "2025-10-11T02:00:00+00:00"


def test_calendar_is_per_company(demo):
    tj, qd = demo["TJ"].id, demo["QD"].id
    db.session.execute(sa.delete(CalendarDay).where(CalendarDay.company_id == qd))
    db.session.add(CalendarDay(company_id=tj, day=date(2025, 10, 9), kind="holiday", name="供热调试"))
    db.session.commit()
    # TJ from Wednesday 8 October: 9 October is now off, Friday 10 and Saturday 11 (调休) are days 1
    # and 2, Sunday 12 is a weekend day, so day 3 is Monday 13 October.
    assert add_working_days(tj, _beijing(2025, 10, 8), 3) == _beijing(2025, 10, 13).astimezone(UTC)
    # QD without calendar rows counts Monday to Friday only: Wednesday 1 to Friday 3 October.
    assert add_working_days(qd, _beijing(2025, 9, 30), 3) == _beijing(2025, 10, 3).astimezone(UTC)


def test_spring_festival_matches_library(demo):
    # 60 working days from Monday 2025-12-22 cross New Year and the Spring Festival 2026; the
    # seeded calendar gives the same day as chinesecalendar's own is_workday.
    start = _beijing(2025, 12, 22)
    expected, counted = start.date(), 0
    while counted < 60:
        expected += timedelta(days=1)
        counted += chinese_calendar.is_workday(expected)
    assert add_working_days(demo["TJ"].id, start, 60) == _beijing(expected.year, expected.month, expected.day).astimezone(UTC)


def test_seed_keeps_company_edits(demo):
    tj = demo["TJ"].id
    row = db.session.scalar(sa.select(CalendarDay).where(CalendarDay.company_id == tj, CalendarDay.day == date(2025, 10, 11)))
    row.kind = "holiday"
    db.session.commit()
    assert seed_calendar(tj, years=(2025,)) == 0
    db.session.refresh(row)
    assert row.kind == "holiday"


def test_calendar_page_edits_days(demo, login):
    tj = demo["TJ"].id
    admin = login("tj_admin")
    page = admin.get("/processes/calendar?year=2025")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "2025-10-01" in text
    assert "国庆节" in text

    response = admin.post("/processes/calendar?year=2025", data={"day": "2025-10-09", "kind": "holiday", "name": "供热调试"})
    assert response.status_code == 303
    assert _days(tj, 2025)[date(2025, 10, 9)].name == "供热调试"
    assert add_working_days(tj, _beijing(2025, 9, 30), 3) == _beijing(2025, 10, 13).astimezone(UTC)

    response = admin.post("/processes/calendar?year=2025", data={"action": "delete", "day": "2025-10-11"})
    assert response.status_code == 303
    assert date(2025, 10, 11) not in _days(tj, 2025)


def test_calendar_page_rejects_bad_input(demo, login):
    admin = login("tj_admin")
    response = admin.post("/processes/calendar", data={"day": "2025-13-01", "kind": "holiday"})
    assert response.status_code == 400
    assert "日期「2025-13-01」不是有效日期" in response.get_data(as_text=True)
    response = admin.post("/processes/calendar", data={"day": "2025-10-09", "kind": "sometimes"})
    assert response.status_code == 400
    assert "类型「sometimes」无效" in response.get_data(as_text=True)
    response = admin.post("/processes/calendar", data={"action": "delete", "day": "2025-10-09"})
    assert response.status_code == 400
    assert "没有 2025-10-09 这一天的设置" in response.get_data(as_text=True)
    assert admin.get("/processes/calendar?year=1900").status_code == 400


def test_calendar_page_needs_configure_permission(demo, login):
    assert login("tj_clerk").get("/processes/calendar").status_code == 403
    assert login("hq_auditor").get("/processes/calendar").status_code == 403


def test_seed_year_from_page(demo, login):
    tj = demo["TJ"].id
    db.session.execute(sa.delete(CalendarDay).where(CalendarDay.company_id == tj))
    db.session.commit()
    admin = login("tj_admin")
    response = admin.post("/processes/calendar?year=2026", data={"action": "seed"})
    assert response.status_code == 303
    assert len(_days(tj, 2026)) == len(published_days({2026}))
    assert _days(tj, 2025) == {}

"""A company's working calendar: which days count as working days for deadlines and escalation.

A day is a working day when it is Monday to Friday, unless the company's CalendarDay row
makes it a holiday, or when the row makes a weekend day a workday (调休). Each company
keeps its own rows, so a company can add a local holiday or a heating-season duty day.

New companies start from mainland China's public holidays and adjusted working days as
the State Council publishes them, taken from the `chinesecalendar` package (1.11.0 has
them up to 2026). Later years are imported from a file (app.processes.calendar_import).
"""

import logging
from datetime import date, datetime, timedelta, timezone

import chinese_calendar
import sqlalchemy as sa
from flask_babel import gettext as _

from app.clock import LOCAL_TIME
from app.extensions import db
from app.i18n import N_, join_items, translate_label
from app.processes.models import CALENDAR_KINDS, CalendarDay
from app.tenancy import current_scope

logger = logging.getLogger(__name__)

# Years seeded into a new company's calendar.
# TODO: 2027 is not in chinesecalendar 1.11.0, so a new company gets no 2027 days until the
# published list is imported (calendar page or `flask heat calendar-import`).
SEEDED_YEARS = (2025, 2026, 2027)
MIN_YEAR, MAX_YEAR = 2000, 2100
MAX_NAME_LENGTH = 32


# chinesecalendar names holidays in English; the calendar page shows the Chinese names.
HOLIDAY_NAMES = {
    "New Year's Day": "元旦",
    "Spring Festival": "春节",
    "Tomb-sweeping Day": "清明节",
    "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "National Day": "国庆节",
    "Mid-autumn Festival": "中秋节",
    "Anti-Fascist 70th Day": "抗战胜利纪念日",
}


class CalendarError(ValueError):
    """A submitted calendar day is invalid; the message names the field, the value and the fix."""


def published_days(years):
    """State Council holidays and adjusted working days of `years` known to chinesecalendar, as {day: (kind, name)}."""
    days = {}
    for source, kind, suffix in ((chinese_calendar.holidays, "holiday", ""), (chinese_calendar.workdays, "workday", "调休上班")):
        for day, holiday in source.items():
            if day.year in years:
                days[day] = (kind, HOLIDAY_NAMES.get(holiday, holiday) + suffix)
    return days


def seed_calendar(company_id, years=SEEDED_YEARS, user=None):
    """Add the published days of `years` to a company's calendar; days the company already has are kept. Returns how many were added."""
    published = published_days(set(years))
    if not published:
        return 0
    existing = set(db.session.scalars(
        sa.select(CalendarDay.day).where(CalendarDay.company_id == company_id, CalendarDay.day.in_(list(published)))
    ))
    added = 0
    for day, (kind, name) in sorted(published.items()):
        if day in existing:
            continue
        db.session.add(CalendarDay(company_id=company_id, day=day, kind=kind, name=name, updated_by_id=user.id if user else None))
        added += 1
    db.session.flush()
    logger.info("Seeded %s calendar days of %s for company %s", added, sorted(years), company_id)
    return added


def calendar_days(company_id, year):
    """Return the company's calendar rows of one year, in date order."""
    return db.session.scalars(
        sa.select(CalendarDay)
        .where(CalendarDay.company_id == company_id, CalendarDay.day >= date(year, 1, 1), CalendarDay.day <= date(year, 12, 31))
        .order_by(CalendarDay.day)
    ).all()


def day_kinds(company_id, first, last):
    """{day: kind} of the company's calendar rows from `first` to `last`, both included, and possibly of days around them.

    Rows read earlier in the same transaction are reused when they cover the range (see
    remember_day_kinds).
    """
    cached = db.session.info.get(DAYS_CACHE_KEY, {}).get(company_id)
    if cached is not None and cached[0] <= first and last <= cached[1]:
        return cached[2]
    kinds = dict(db.session.execute(
        sa.select(CalendarDay.day, CalendarDay.kind)
        .where(CalendarDay.company_id == company_id, CalendarDay.day >= first, CalendarDay.day <= last)
    ).all())
    remember_day_kinds(company_id, first, last, kinds)
    return kinds


# Session.info key: {company id: (first day, last day, {day: kind})} read in this transaction.
DAYS_CACHE_KEY = "heatflow.calendar_days"


def remember_day_kinds(company_id, first, last, kinds):
    """Keep a company's calendar rows from `first` to `last` for the rest of the transaction.

    Only rows of a company the current tenant scope can see are kept, so that a later read
    under another scope finds the same rows it would read. The cache is dropped when a
    transaction or savepoint ends and when a CalendarDay is written (app.processes.timers).
    """
    if current_scope().can_see(company_id):
        db.session.info.setdefault(DAYS_CACHE_KEY, {})[company_id] = (first, last, kinds)


def is_working_day(day, kinds):
    """True when `day` is a working day, given the calendar rows `kinds` ({day: kind}) around it."""
    kind = kinds.get(day)
    if kind is not None:
        return kind == "workday"
    return day.weekday() < 5


def add_working_days(company_id, start, count):
    """Return `start` moved forward by `count` of the company's working days, keeping the local time of day.

    A start on a holiday or weekend counts from the next working day, so 1 working day
    after Saturday 10:00 is the next working day at 10:00.
    """
    local = start.astimezone(LOCAL_TIME)
    # Twice the count plus three weeks covers the longest published holiday (8 or 9 days for the
    # Spring Festival); a count that runs past the window loads the next one.
    window = timedelta(days=count * 2 + 21)
    first = local.date() + timedelta(days=1)
    last = first + window
    kinds = day_kinds(company_id, first, last)
    moved = 0
    while moved < count:
        local += timedelta(days=1)
        if local.date() > last:
            first, last = local.date(), local.date() + window
            kinds = day_kinds(company_id, first, last)
        if is_working_day(local.date(), kinds):
            moved += 1
    return local.astimezone(timezone.utc)


def parse_day(text, field=N_("日期")):
    """Parse a YYYY-MM-DD date from a form; raise CalendarError naming the field and value."""
    value = (text or "").strip()
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise CalendarError(_(
            "%(field)s「%(value)s」不是有效日期，请按 YYYY-MM-DD 填写，例如 2025-10-01。", field=translate_label(field), value=value[:20],
        )) from None
    if not MIN_YEAR <= day.year <= MAX_YEAR:
        raise CalendarError(_(
            "%(field)s「%(value)s」的年份超出范围，请填写 %(min)s 至 %(max)s 年之间的日期。", field=translate_label(field), value=value,
            min=MIN_YEAR, max=MAX_YEAR,
        ))
    return day


def save_day(company_id, form, user):
    """Add or change one calendar day from the form fields day, kind and name; returns the row (not committed)."""
    day = parse_day(form.get("day"))
    kind = (form.get("kind") or "").strip()
    if kind not in CALENDAR_KINDS:
        raise CalendarError(_(
            "类型「%(value)s」无效，请选择：%(choices)s。", value=kind[:16],
            choices=join_items(translate_label(label) for label in CALENDAR_KINDS.values()),
        ))
    name = (form.get("name") or "").strip()
    if len(name) > MAX_NAME_LENGTH:
        raise CalendarError(_("名称「%(value)s…」超过 %(max)s 个字，请缩短。", value=name[:MAX_NAME_LENGTH], max=MAX_NAME_LENGTH))
    row = db.session.scalar(sa.select(CalendarDay).where(CalendarDay.company_id == company_id, CalendarDay.day == day))
    if row is None:
        row = CalendarDay(company_id=company_id, day=day)
        db.session.add(row)
    row.kind = kind
    row.name = name
    row.updated_by_id = user.id
    db.session.flush()
    logger.info("User %s set calendar day %s of company %s to %s", user.id, day, company_id, kind)
    return row


def delete_day(company_id, text, user):
    """Remove one calendar row, so that the day follows the Monday-to-Friday week again; returns the day."""
    day = parse_day(text)
    row = db.session.scalar(sa.select(CalendarDay).where(CalendarDay.company_id == company_id, CalendarDay.day == day))
    if row is None:
        raise CalendarError(_("日历中没有 %(day)s 这一天的设置，无需删除。", day=day.isoformat()))
    db.session.delete(row)
    db.session.flush()
    logger.info("User %s removed calendar day %s of company %s", user.id, day, company_id)
    return day


def year_summary(company_id, year):
    """(holidays on weekdays, adjusted working days) of a company's year, for the page's heading."""
    rows = calendar_days(company_id, year)
    holidays = sum(1 for row in rows if row.kind == "holiday" and row.day.weekday() < 5)
    workdays = sum(1 for row in rows if row.kind == "workday" and row.day.weekday() >= 5)
    return holidays, workdays


def today_local():
    """Return today's date in Beijing time."""
    return datetime.now(LOCAL_TIME).date()

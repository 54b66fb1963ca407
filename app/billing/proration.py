"""Season charges prorated by days and split by effective-dated tariff version.

A partial period owes charge area × unit price × ratio × days / statutory days, with both
ends of the period counted and the amount rounded once. Each tariff version in force
during the billed period gets its own line for its own days, so adjacent periods share
no day and each line shows the price it was billed at.
"""

import logging
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.orm import joinedload

from app.extensions import db
from app.i18n import M_
from app.money import round_money
from app.network.terms import terms_periods
from app.tariffs.models import Tariff
from app.tariffs.services import TariffError, charge_area, status_ratio, unit_price

logger = logging.getLogger(__name__)

ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class ChargeLine:
    """The charge of one tariff version for the days of the billed period it was in force."""

    # A Tariff, or the TariffRates of one (app.tariffs.rates).
    tariff: Tariff
    start_on: date
    end_on: date
    days: int
    statutory_days: int
    charge_area: Decimal
    unit_price: Decimal
    ratio: Decimal
    amount: Decimal
    # False for a whole season under one version, which owes the full fee without a day factor.
    prorated: bool

    def describe(self):
        """Return the period and day count as a Message, for the memo of a prorated line."""
        return M_(
            "%(start)s至%(end)s 共%(days)s天/法定%(statutory_days)s天",
            start=self.start_on.isoformat(), end=self.end_on.isoformat(), days=self.days, statutory_days=self.statutory_days,
        )


def days_inclusive(start_on, end_on):
    """Count the days from `start_on` to `end_on`, both included."""
    return (end_on - start_on).days + 1


def prorate(full_amount, days, statutory_days):
    """Return `full_amount` × days / statutory days, unrounded.

    The single division happens last, so the result is exact to 28 digits. That is far
    finer than any rounding boundary a day count below 1,000 could produce.
    """
    if statutory_days <= 0:
        raise TariffError(_("法定供暖天数 %(days)s 无效；请在供暖季设置中填写大于 0 的天数。", days=statutory_days))
    return full_amount * days / statutory_days


def season_tariffs(season, pending_id=None, with_rates=False):
    """Return the active tariff versions of `season`, earliest `effective_from` first.

    `pending_id` adds that version while it awaits its re-rating's approval, so the
    re-rating can bill what the version would change. `with_rates` loads each version's
    prices and area rules in the same query, for a caller that computes a charge and
    would otherwise load them one query each. A re-rating of one account reads the plain
    values that app.tariffs.rates keeps per process instead.
    """
    in_force = Tariff.status == "active"
    if pending_id is not None:
        in_force = sa.or_(in_force, sa.and_(Tariff.id == pending_id, Tariff.status == "pending"))
    statement = (
        sa.select(Tariff)
        .where(Tariff.company_id == season.company_id, Tariff.season_id == season.id, in_force)
        .order_by(Tariff.effective_from)
    )
    if with_rates:
        statement = statement.options(joinedload(Tariff.prices), joinedload(Tariff.area_rules))
    return db.session.scalars(statement).unique().all()


def tariff_periods(season, tariffs, start_on, end_on):
    """Split `start_on`..`end_on` into [(tariff, first day, last day)], one per version in force.

    On each day the version with the latest `effective_from` on or before it applies.
    """
    if start_on > end_on:
        raise TariffError(_("计费起止日期 %(start)s 至 %(end)s 无效；开始日期不能晚于结束日期。", start=start_on, end=end_on))
    if not tariffs or tariffs[0].effective_from > start_on:
        raise TariffError(_("供暖季 %(season)s 在 %(date)s 没有生效的收费标准；请在收费标准中添加。", season=season.name, date=start_on))
    periods = []
    for index, tariff in enumerate(tariffs):
        next_from = tariffs[index + 1].effective_from if index + 1 < len(tariffs) else None
        first = max(tariff.effective_from, start_on)
        last = min(next_from - ONE_DAY, end_on) if next_from else end_on
        if first <= last:
            periods.append((tariff, first, last))
    return periods


def billing_period(account, season):
    """Return (first day, last day) of the season `account` is billed for, or None when connected after it."""
    start_on = season.start_on
    if account.connected_on is not None and account.connected_on > start_on:
        start_on = account.connected_on
    if start_on > season.end_on:
        return None
    return start_on, season.end_on


def charge_periods(season, tariffs, terms, start_on, end_on):
    """Split `start_on`..`end_on` into [(tariff, Terms, first day, last day)].

    A new period starts wherever a tariff version or a terms snapshot takes effect.
    """
    periods = []
    for tariff, tariff_first, tariff_last in tariff_periods(season, tariffs, start_on, end_on):
        for account_terms, terms_first, terms_last in terms:
            first = max(tariff_first, terms_first)
            last = min(tariff_last, terms_last)
            if first <= last:
                periods.append((tariff, account_terms, first, last))
    return periods


def season_charge_lines(account, season, tariffs, has_lift, heat_source_kind, billing_status=None, history=None):
    """Return the charge lines of an account for a season, or None when its status owes nothing.

    An account connected after the season ends gets an empty list.

    A whole season under one tariff version and one set of account terms is billed at the
    full fee, as before any proration existed. Anything else is prorated by days, one line
    per period in which the tariff version and the account's areas and user type stay the
    same. `history` is the account's terms_history() entry; None reads it from the database.
    """
    period = billing_period(account, season)
    if period is None:
        return []
    status = billing_status or account.billing_status
    terms = terms_periods(account, *period, history=history)
    periods = charge_periods(season, tariffs, terms, *period)
    whole_season = len(periods) == 1 and period == (season.start_on, season.end_on)
    lines = []
    for tariff, account_terms, first, last in periods:
        ratio = status_ratio(tariff, status)
        if ratio is None:
            return None
        area = charge_area(tariff, account_terms, has_lift)
        price = unit_price(tariff, account_terms, heat_source_kind)
        full = area * price * ratio
        days = days_inclusive(first, last)
        exact = full if whole_season else prorate(full, days, season.statutory_days)
        lines.append(
            ChargeLine(
                tariff=tariff, start_on=first, end_on=last, days=days, statutory_days=season.statutory_days,
                charge_area=area, unit_price=price, ratio=ratio, amount=round_money(exact), prorated=not whole_season,
            )
        )
    return lines


def season_charge_total(lines):
    """Sum the rounded amounts of charge lines (zero for None or no lines)."""
    return sum((line.amount for line in lines or ()), Decimal("0.00"))

"""Tariff lookup and the charge arithmetic of one account."""

from dataclasses import dataclass
from decimal import Decimal

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.money import round_money
from app.network.models import TARIFF_CATEGORY
from app.tariffs.models import Season, Tariff

ONE = Decimal(1)


class TariffError(LookupError):
    """A season or tariff needed for billing is missing or incomplete."""


@dataclass(frozen=True)
class Charge:
    """One season charge before it is stored: its inputs and its rounded amount."""

    charge_area: Decimal
    unit_price: Decimal
    ratio: Decimal
    amount: Decimal


def get_season(company_id, name):
    """Return the company's season called `name`, or raise TariffError."""
    season = db.session.scalar(sa.select(Season).filter_by(company_id=company_id, name=name))
    if season is None:
        raise TariffError(_("本公司没有供暖季 %(season)s；请先建立该供暖季及其收费标准。", season=name))
    return season


def tariff_in_force(season, on_date=None):
    """Return the tariff of `season` in force on `on_date` (default: the season start)."""
    on_date = on_date or season.start_on
    tariff = db.session.scalar(
        sa.select(Tariff)
        .filter(
            Tariff.company_id == season.company_id, Tariff.season_id == season.id, Tariff.effective_from <= on_date,
            Tariff.status == "active",
        )
        .order_by(Tariff.effective_from.desc())
        .limit(1)
    )
    if tariff is None:
        raise TariffError(_("供暖季 %(season)s 在 %(date)s 没有生效的收费标准；请在收费标准中添加。", season=season.name, date=on_date))
    return tariff


def charge_area(tariff, account, has_lift):
    """Charge area of `account` under `tariff`, exact (never rounded here)."""
    category = TARIFF_CATEGORY[account.user_type]
    rule = next((r for r in tariff.area_rules if r.category == category), None)
    if rule is None:
        return account.building_area
    if rule.basis == "usable_area":
        if account.usable_area is not None:
            return account.usable_area * rule.factor
        return account.building_area * (rule.fallback_factor if rule.fallback_factor is not None else ONE)
    factor = rule.lift_factor if has_lift and rule.lift_factor is not None else rule.factor
    return account.building_area * factor


def unit_price(tariff, account, heat_source_kind):
    """Price per m² for the account's category, preferring a heat-source-kind override."""
    category = TARIFF_CATEGORY[account.user_type]
    default = None
    for price in tariff.prices:
        if price.category != category:
            continue
        if price.heat_source_kind and price.heat_source_kind == heat_source_kind:
            return price.unit_price
        if not price.heat_source_kind:
            default = price.unit_price
    if default is None:
        raise TariffError(_("收费标准缺少「%(category)s」类用户的单价；请在收费标准中补充。", category=category))
    return default


def status_ratio(tariff, billing_status):
    """Share of the full fee a status pays: 1 heated, the suspension ratio when 报停, else None."""
    if billing_status in ("normal", "forced_off"):
        return ONE
    if billing_status == "suspended":
        return tariff.suspension_ratio
    return None


def compute_charge(tariff, account, has_lift, heat_source_kind, billing_status=None):
    """Season charge of an account, rounded once; None when the status owes nothing."""
    ratio = status_ratio(tariff, billing_status or account.billing_status)
    if ratio is None:
        return None
    area = charge_area(tariff, account, has_lift)
    price = unit_price(tariff, account, heat_source_kind)
    return Charge(charge_area=area, unit_price=price, ratio=ratio, amount=round_money(area * price * ratio))

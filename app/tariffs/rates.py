"""The active tariff versions of a season with their prices and area rules, as plain values kept per worker process.

Every approval that re-rates an account needs them. A process keeps them per company and
season under `company.tariff_stamp`, which every ORM write of a tariff, a price or an area
rule renews (app.stamps.CompanyStamp).
"""

import functools
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from app.extensions import db
from app.stamps import CompanyStamp
from app.tariffs.models import ChargeAreaRule, Tariff, TariffPrice
from app.tenancy import current_scope

TARIFF_STAMP = CompanyStamp("tariff_stamp", (Tariff, TariffPrice, ChargeAreaRule))


@dataclass(frozen=True)
class PriceRate:
    """A TariffPrice's values."""

    category: str
    heat_source_kind: str
    unit_price: Decimal


@dataclass(frozen=True)
class AreaRate:
    """A ChargeAreaRule's values."""

    category: str
    basis: str
    factor: Decimal
    lift_factor: Decimal | None
    fallback_factor: Decimal | None


@dataclass(frozen=True)
class TariffRates:
    """The values of a tariff version that compute a charge, with the attribute names of Tariff."""

    id: int
    company_id: int
    season_id: int
    effective_from: date
    suspension_ratio: Decimal
    prices: tuple[PriceRate, ...]
    area_rules: tuple[AreaRate, ...]


@functools.cache
def _active_tariffs_with_stamp():
    # Built on first use, because joinedload configures every mapper, which fails while a
    # model that a relationship names is not imported yet.
    return (
        sa.select(Tariff, TARIFF_STAMP.of(Tariff.company_id))
        .where(Tariff.company_id == sa.bindparam("company_id"), Tariff.season_id == sa.bindparam("season_id"), Tariff.status == "active")
        .order_by(Tariff.effective_from)
        .options(joinedload(Tariff.prices), joinedload(Tariff.area_rules))
    )


def _rates(tariff):
    return TariffRates(
        id=tariff.id, company_id=tariff.company_id, season_id=tariff.season_id, effective_from=tariff.effective_from,
        suspension_ratio=tariff.suspension_ratio,
        prices=tuple(PriceRate(price.category, price.heat_source_kind, price.unit_price) for price in tariff.prices),
        area_rules=tuple(
            AreaRate(rule.category, rule.basis, rule.factor, rule.lift_factor, rule.fallback_factor) for rule in tariff.area_rules
        ),
    )


def season_tariff_rates(season):
    """Return the active tariff versions of `season` as TariffRates, earliest `effective_from` first.

    A step that read the company's tariff_stamp with its row lock (TARIFF_STAMP.remember)
    gets the versions this process kept under that stamp without a query.
    """
    key = (season.company_id, season.id)
    if current_scope().can_see(season.company_id):
        cached = TARIFF_STAMP.get(season.company_id, key)
        if cached is not None:
            return cached
    rows = db.session.execute(_active_tariffs_with_stamp(), {"company_id": season.company_id, "season_id": season.id}).unique().all()
    rates = tuple(_rates(tariff) for tariff, _stamp in rows)
    if rows:
        TARIFF_STAMP.keep(key, rows[0][1], rates)
    return rates

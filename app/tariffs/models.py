"""Seasons and effective-dated tariffs, stored as data each company's administrators edit."""

import sqlalchemy as sa

from app.i18n import N_
from app.extensions import db
from app.money import Rate
from app.tenancy import CompanyOwned


class Season(CompanyOwned, db.Model):
    """A heating season of one company, e.g. 2025-2026, with its statutory day count."""

    __table_args__ = (sa.UniqueConstraint("company_id", "name"),)

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(9), nullable=False)
    start_on = sa.Column(sa.Date, nullable=False)
    end_on = sa.Column(sa.Date, nullable=False)
    # Divisor for proration by days; both ends of the season count.
    statutory_days = sa.Column(sa.Integer, nullable=False)


# Tariff version status -> Chinese label. A new version of a season already billed is
# `pending` until the tariff re-rating that bills it is posted, and `withdrawn` when that
# re-rating is rejected. Billing, late fees and lookups use `active` versions only.
TARIFF_STATUSES = {"active": N_("生效"), "pending": N_("待追溯调整审批"), "withdrawn": N_("已撤回")}


class Tariff(CompanyOwned, db.Model):
    """The pricing rules of one company in force from `effective_from` within a season."""

    __table_args__ = (sa.UniqueConstraint("company_id", "season_id", "effective_from"),)

    id = sa.Column(sa.Integer, primary_key=True)
    season_id = sa.Column(sa.Integer, sa.ForeignKey("season.id"), nullable=False)
    effective_from = sa.Column(sa.Date, nullable=False)
    suspension_ratio = sa.Column(Rate(), nullable=False)
    # Late fee: a daily rate on the unpaid area-based fee, from the day after `late_fee_starts_after`.
    late_fee_starts_after = sa.Column(sa.Date)
    late_fee_rate_per_day = sa.Column(Rate())
    # Last day a late fee accrues. NULL: it accrues until the fee is paid, after the season
    # ends too, so prior seasons' arrears keep accruing under their own season's rule.
    late_fee_stops_after = sa.Column(sa.Date)
    # Metered two-part tariff: base per m² of charge area plus a price per GJ.
    metered_base_per_m2 = sa.Column(Rate())
    metered_per_gj = sa.Column(Rate())
    metered_cap_residential = sa.Column(sa.Boolean, nullable=False, default=True)
    # Settlement of metered accounts against the prepaid area fee: none, refund_only
    # (多退少不补) or refund_and_surcharge (多退少补).
    metered_settlement = sa.Column(sa.String(24), nullable=False, default="none")
    note = sa.Column(sa.String(255), nullable=False, default="")
    status = sa.Column(sa.String(16), nullable=False, default="active", server_default="active")

    season = db.relationship(Season)
    prices = db.relationship("TariffPrice", order_by="TariffPrice.id", cascade="all, delete-orphan")
    area_rules = db.relationship("ChargeAreaRule", order_by="ChargeAreaRule.id", cascade="all, delete-orphan")

    @property
    def status_label(self):
        return TARIFF_STATUSES.get(self.status, self.status)


class TariffPrice(CompanyOwned, db.Model):
    """Unit price per m² and season for a tariff category, optionally for one heat-source kind."""

    __table_args__ = (sa.UniqueConstraint("company_id", "tariff_id", "category", "heat_source_kind"),)

    id = sa.Column(sa.Integer, primary_key=True)
    tariff_id = sa.Column(sa.Integer, sa.ForeignKey("tariff.id"), nullable=False)
    category = sa.Column(sa.String(16), nullable=False)
    # Empty for the default price; e.g. 燃气锅炉 for accounts on stations fed by gas boilers.
    heat_source_kind = sa.Column(sa.String(32), nullable=False, default="")
    unit_price = sa.Column(Rate(), nullable=False)


class ChargeAreaRule(CompanyOwned, db.Model):
    """How the charge area of a tariff category is derived from the recorded areas.

    basis building_area: building area × factor (× lift_factor instead when the building has a lift
    and lift_factor is set). basis usable_area: usable area × factor, or building area ×
    fallback_factor when the usable area is blank.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "tariff_id", "category"),)

    id = sa.Column(sa.Integer, primary_key=True)
    tariff_id = sa.Column(sa.Integer, sa.ForeignKey("tariff.id"), nullable=False)
    category = sa.Column(sa.String(16), nullable=False)
    basis = sa.Column(sa.String(16), nullable=False, default="building_area")
    factor = sa.Column(Rate(), nullable=False, default=1)
    lift_factor = sa.Column(Rate())
    fallback_factor = sa.Column(Rate())

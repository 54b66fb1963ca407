"""The heating network and its customers: heat sources, stations, communities, buildings,
units and accounts (户)."""

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import N_, translate_label
from app.money import Area, Money
from app.tenancy import CompanyOwned

# Billing status code -> Chinese label (translated where shown). Valve state is a separate field.
BILLING_STATUSES = {
    "normal": N_("正常"),
    "suspended": N_("报停"),
    "not_connected": N_("未入网"),
    "forced_off": N_("强停"),
    "dismantled": N_("拆除"),
}
VALVE_STATES = {
    "open": N_("开栓"),
    "closed": N_("关栓"),
    "sealed": N_("施封"),
    "open_pending": N_("开栓未完成"),
    "close_pending": N_("关栓未完成"),
}
# User type code -> Chinese label (translated where shown); the tariff category is residential or non_residential.
USER_TYPES = {
    "residential": N_("居民"),
    "low_income": N_("低保"),
    "non_residential": N_("非居民"),
}
TARIFF_CATEGORY = {"residential": "residential", "low_income": "residential", "non_residential": "non_residential"}
BILLING_METHODS = {"area": N_("面积"), "metered": N_("计量")}


class HeatSource(CompanyOwned, db.Model):
    """A heat source (热源); its kind (e.g. 燃气锅炉) can set the price."""

    __table_args__ = (sa.UniqueConstraint("company_id", "name"),)

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(100), nullable=False)
    kind = sa.Column(sa.String(32), nullable=False, default="")


class Station(CompanyOwned, db.Model):
    """A heat-exchange station (换热站) fed by one heat source."""

    __table_args__ = (sa.UniqueConstraint("company_id", "name"),)

    id = sa.Column(sa.Integer, primary_key=True)
    name = sa.Column(sa.String(100), nullable=False)
    heat_source_id = sa.Column(sa.Integer, sa.ForeignKey("heat_source.id"))

    heat_source = db.relationship(HeatSource)


class Community(CompanyOwned, db.Model):
    """A residential community (小区) with its 4-digit code inside the company."""

    __table_args__ = (sa.UniqueConstraint("company_id", "code"), sa.UniqueConstraint("company_id", "name"))

    id = sa.Column(sa.Integer, primary_key=True)
    code = sa.Column(sa.String(4), nullable=False)
    name = sa.Column(sa.String(100), nullable=False)


class Building(CompanyOwned, db.Model):
    """A building (楼栋) of a community; `code` is its 3-digit part of the account number."""

    __table_args__ = (sa.UniqueConstraint("company_id", "community_id", "code"),)

    id = sa.Column(sa.Integer, primary_key=True)
    community_id = sa.Column(sa.Integer, sa.ForeignKey("community.id"), nullable=False)
    code = sa.Column(sa.String(3), nullable=False)
    has_lift = sa.Column(sa.Boolean, nullable=False, default=False)

    community = db.relationship(Community)


class Unit(CompanyOwned, db.Model):
    """A stairwell unit (单元) of a building; `code` is its 2-digit part of the account number."""

    __table_args__ = (sa.UniqueConstraint("company_id", "building_id", "code"),)

    id = sa.Column(sa.Integer, primary_key=True)
    building_id = sa.Column(sa.Integer, sa.ForeignKey("building.id"), nullable=False)
    code = sa.Column(sa.String(2), nullable=False)

    building = db.relationship(Building)


class Account(CompanyOwned, db.Model):
    """A heating account (户): one dwelling or business premise and its customer."""

    __table_args__ = (
        sa.UniqueConstraint("company_id", "account_no"),
        sa.UniqueConstraint("company_id", "legacy_no"),
        # Target of ledger_entry's (company_id, account_id) foreign key.
        sa.UniqueConstraint("company_id", "id"),
        sa.Index("ix_account_company_name", "company_id", "customer_name"),
        sa.Index("ix_account_company_phone", "company_id", "phone"),
        # The HQ drill-down lists a community's accounts; the dashboards count shut-off valves.
        sa.Index("ix_account_company_unit", "company_id", "unit_id"),
        sa.Index("ix_account_valve_company", "valve_state", "company_id"),
    )

    id = sa.Column(sa.Integer, primary_key=True)
    # Unified 15-digit number: company 2 + community 4 + building 3 + unit 2 + room 4.
    account_no = sa.Column(sa.String(15), nullable=False)
    legacy_no = sa.Column(sa.String(64))
    customer_name = sa.Column(sa.String(100), nullable=False, default="")
    phone = sa.Column(sa.String(32), nullable=False, default="")
    unit_id = sa.Column(sa.Integer, sa.ForeignKey("unit.id"), nullable=False)
    room = sa.Column(sa.String(16), nullable=False)
    station_id = sa.Column(sa.Integer, sa.ForeignKey("station.id"))
    building_area = sa.Column(Area(), nullable=False)
    usable_area = sa.Column(Area())
    user_type = sa.Column(sa.String(16), nullable=False)
    billing_status = sa.Column(sa.String(16), nullable=False)
    valve_state = sa.Column(sa.String(16), nullable=False, default="open")
    billing_method = sa.Column(sa.String(16), nullable=False, default="area")
    # Arrears carried from earlier seasons as the ledger reported them at import.
    prior_arrears = sa.Column(Money(), nullable=False, default=0)
    # First heated day of an account connected during a season; NULL when connected before it.
    connected_on = sa.Column(sa.Date)
    # First day of the current 强停. Late fees do not accrue from this day on.
    forced_off_on = sa.Column(sa.Date)
    # The ledger's 备注, stored whole; the importer rejects notes over NOTE_MAX_CHARS (app.ledger.parser).
    note = sa.Column(sa.Text, nullable=False, default="")

    unit = db.relationship(Unit)
    station = db.relationship(Station)

    @property
    def address(self):
        """The address in Chinese, as receipts, invoices and exports print it."""
        building = self.unit.building
        return f"{building.community.name}{int(building.code)}号楼{int(self.unit.code)}单元{self.room}"

    @property
    def display_address(self):
        """The address in the reader's language, for pages."""
        building = self.unit.building
        return _(
            "%(community)s%(building)s号楼%(unit)s单元%(room)s",
            community=building.community.name, building=int(building.code), unit=int(self.unit.code), room=self.room,
        )

    @property
    def valve_label(self):
        return translate_label(VALVE_STATES.get(self.valve_state, self.valve_state))

    @property
    def status_label(self):
        return translate_label(BILLING_STATUSES.get(self.billing_status, self.billing_status))

    @property
    def user_type_label(self):
        return translate_label(USER_TYPES.get(self.user_type, self.user_type))


class AccountTerms(CompanyOwned, db.Model):
    """The billing terms of an account (areas and user type) in force from `effective_from`.

    Each row is a full snapshot. The row with the latest `effective_from` on or before a day
    applies on that day, and the Account row carries the latest snapshot. An account
    without rows has had its current terms all along.
    """

    __table_args__ = (sa.UniqueConstraint("company_id", "account_id", "effective_from"),)

    id = sa.Column(sa.Integer, primary_key=True)
    account_id = sa.Column(sa.Integer, sa.ForeignKey("account.id"), nullable=False, index=True)
    effective_from = sa.Column(sa.Date, nullable=False)
    building_area = sa.Column(Area(), nullable=False)
    usable_area = sa.Column(Area())
    user_type = sa.Column(sa.String(16), nullable=False)
    memo = sa.Column(sa.String(255), nullable=False, default="")
    created_by_id = sa.Column(sa.Integer, sa.ForeignKey("user.id"))
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, default=sa.func.now())

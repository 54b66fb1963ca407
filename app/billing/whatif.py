"""What-if: bill a billed season again under a draft tariff and compare, writing nothing.

The draft is the tariff form's values held in plain objects, never ORM rows, and the
computation runs in a read-only transaction (PostgreSQL `SET TRANSACTION READ ONLY`,
SQLite `PRAGMA query_only`), so any write would fail instead of being stored.
"""

import contextlib
import io
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa
from flask_babel import gettext as _
from openpyxl import Workbook
from openpyxl.styles import Font

from app.billing.precision import company_money_rule
from app.billing.proration import season_charge_lines, season_charge_total
from app.billing.rerating import billed_charges, status_in_season
from app.billing.services import account_charge_inputs
from app.extensions import db
from app.i18n import translate_label
from app.money import ZERO
from app.network.models import TARIFF_CATEGORY, USER_TYPES, Account
from app.network.terms import terms_history
from app.tariffs.editing import CATEGORIES, parse_tariff_form
from app.tariffs.models import Season
from app.tariffs.rates import AreaRate, PriceRate

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DraftTariff:
    """A tariff that is not stored: the attributes billing reads from a Tariff row."""

    effective_from: object
    suspension_ratio: Decimal
    prices: tuple
    area_rules: tuple


def draft_from_form(season, form):
    """Build a DraftTariff in force for the whole `season` from tariff form values."""
    values = parse_tariff_form(form)
    return DraftTariff(
        effective_from=season.start_on,
        suspension_ratio=values["suspension_ratio"],
        prices=tuple(PriceRate(*price) for price in values["prices"]),
        area_rules=tuple(AreaRate(*rule) for rule in values["rules"]),
    )


@dataclass
class HouseholdDifference:
    account_no: str
    customer_name: str
    user_type: str
    category: str
    billed: Decimal
    draft: Decimal

    @property
    def difference(self):
        return self.draft - self.billed

    @property
    def abs_difference(self):
        return abs(self.difference)


@dataclass
class WhatIfResult:
    """The comparison of one company and season: households, sums per category and the total."""

    company_id: int
    season_name: str
    households: list = field(default_factory=list)

    def by_category(self):
        """Return {category: [accounts, billed, draft, difference]}."""
        sums = defaultdict(lambda: [0, ZERO, ZERO, ZERO])
        for row in self.households:
            entry = sums[row.category]
            entry[0] += 1
            entry[1] += row.billed
            entry[2] += row.draft
            entry[3] += row.difference
        return dict(sums)

    def total(self):
        """Return [accounts, billed, draft, difference] of the company."""
        billed = sum((row.billed for row in self.households), ZERO)
        draft = sum((row.draft for row in self.households), ZERO)
        return [len(self.households), billed, draft, draft - billed]


@contextlib.contextmanager
def read_only_transaction():
    """Run a block in a transaction the database refuses to write in, rolled back afterwards."""
    db.session.rollback()
    dialect = db.session.get_bind().dialect.name
    sqlite_connection = None
    if dialect == "postgresql":
        db.session.execute(sa.text("SET TRANSACTION READ ONLY"))
    elif dialect == "sqlite":
        db.session.execute(sa.text("PRAGMA query_only = ON"))
        # The pragma stays on the pooled connection, so it is switched off on that very
        # connection afterwards, not on whichever one the session takes next.
        sqlite_connection = db.session.connection().connection.dbapi_connection
    try:
        yield
    finally:
        db.session.rollback()
        if sqlite_connection is not None:
            sqlite_connection.execute("PRAGMA query_only = OFF")


def run_what_if(company_id, season, draft):
    """Compare each account billed in `season` with what `draft` would bill; returns a WhatIfResult.

    The season's current status of each account is taken as in re-rating. Nothing is written.
    """
    result = WhatIfResult(company_id=company_id, season_name=season.name)
    with read_only_transaction(), company_money_rule(company_id):
        season = db.session.get(Season, season.id)
        billed = billed_charges(company_id, season.id)
        accounts = db.session.scalars(sa.select(Account).where(Account.id.in_(list(billed))).order_by(Account.account_no)).all()
        history = terms_history([account.id for account in accounts])
        latest_season_id = db.session.scalar(
            sa.select(Season.id).where(Season.company_id == company_id).order_by(Season.start_on.desc()).limit(1)
        )
        for account in accounts:
            status = status_in_season(account, season, latest_season_id)
            has_lift, kind = account_charge_inputs(account)
            lines = season_charge_lines(account, season, [draft], has_lift, kind, billing_status=status,
                                        history=history.get(account.id, []))
            result.households.append(
                HouseholdDifference(
                    account_no=account.account_no, customer_name=account.customer_name, user_type=account.user_type,
                    category=TARIFF_CATEGORY.get(account.user_type, account.user_type),
                    billed=billed[account.id], draft=season_charge_total(lines),
                )
            )
    logger.info("What-if for company %s season %s compared %s accounts", company_id, season.name, len(result.households))
    return result


def export_what_if(result, company_name):
    """Write a WhatIfResult as an .xlsx workbook (company, category and household sheets); return its bytes."""
    workbook = Workbook()
    total = workbook.active
    total.title = _("公司汇总")
    header = [_("户数"), _("现行应收（元）"), _("测算应收（元）"), _("差额（元）")]
    total.append([_("公司"), _("供暖季"), *header])
    total.append([company_name, result.season_name, *result.total()])
    categories = workbook.create_sheet(_("按类别"))
    categories.append([_("用户类别"), *header])
    for category, sums in result.by_category().items():
        categories.append([translate_label(CATEGORIES.get(category, category)), *sums])
    households = workbook.create_sheet(_("按户"))
    households.append([_("用户编号"), _("户名"), _("用户类型"), _("现行应收（元）"), _("测算应收（元）"), _("差额（元）")])
    for row in result.households:
        households.append([row.account_no, row.customer_name, translate_label(USER_TYPES.get(row.user_type, row.user_type)), row.billed,
                           row.draft, row.difference])
    for sheet in workbook.worksheets:
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in sheet.iter_rows(min_row=2):
            for cell in row:
                if isinstance(cell.value, Decimal):
                    cell.number_format = "0.00"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()

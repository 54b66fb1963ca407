"""Group-wide figures: receivable, received, arrears and collection rate per company."""

from decimal import Decimal

import sqlalchemy as sa
from flask_babel import gettext as _

from app.billing.models import RECEIVABLE_KINDS, RECEIVED_KINDS, LedgerEntry
from app.extensions import db
from app.money import ZERO, Money, format_money
from app.network.models import Account
from app.org.models import Company
from app.tariffs.models import Season

HUNDRED = Decimal(100)


def collection_rate(received, receivable):
    """收费率 in percent to 0.01, or None when nothing is receivable."""
    if receivable == 0:
        return None
    return (received * HUNDRED / receivable).quantize(Decimal("0.01"))


def collection_summary(season_name):
    """Per company and for the group: accounts, receivable, received, arrears and rates.

    Received counts payments applied to the season, never more than an account's
    receivable, so a credit balance is not collection. The arrears rate is shown as 100
    minus the collection rate so that the two displayed figures add up to 100.00.
    """
    companies = db.session.scalars(sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.number)).all()
    rows = []
    totals = {"accounts": 0, "receivable": ZERO, "received": ZERO}
    for company in companies:
        season = db.session.scalar(sa.select(Season).filter_by(company_id=company.id, name=season_name))
        accounts = db.session.scalar(sa.select(sa.func.count(Account.id)).where(Account.company_id == company.id)) or 0
        receivable = received = ZERO
        if season is not None:
            # Summed per account in the database: received is capped at each account's
            # receivable, so one query over the season's lines instead of a row per account.
            per_account = (
                sa.select(
                    sa.func.sum(sa.case((LedgerEntry.kind.in_(RECEIVABLE_KINDS), LedgerEntry.amount), else_=0)).label("due"),
                    sa.func.sum(sa.case((LedgerEntry.kind.in_(RECEIVED_KINDS), -LedgerEntry.amount), else_=0)).label("paid"),
                )
                .where(LedgerEntry.company_id == company.id, LedgerEntry.season_id == season.id)
                .group_by(LedgerEntry.account_id)
                .subquery()
            )
            capped = sa.case((per_account.c.paid < per_account.c.due, per_account.c.paid), else_=per_account.c.due)
            due, paid = db.session.execute(
                sa.select(
                    sa.type_coerce(sa.func.coalesce(sa.func.sum(per_account.c.due), 0), Money()),
                    sa.type_coerce(sa.func.coalesce(sa.func.sum(sa.case((per_account.c.due > 0, capped), else_=0)), 0), Money()),
                )
            ).one()
            receivable, received = due or ZERO, paid or ZERO
        rows.append(_row(company.code, company.name, accounts, receivable, received))
        totals["accounts"] += accounts
        totals["receivable"] += receivable
        totals["received"] += received
    group = _row("NHG", _("集团合计"), totals["accounts"], totals["receivable"], totals["received"])
    return {"season": season_name, "companies": rows, "group": group}


def _row(code, name, accounts, receivable, received):
    rate = collection_rate(received, receivable)
    return {
        "code": code,
        "name": name,
        "accounts": accounts,
        "receivable": format_money(receivable),
        "received": format_money(received),
        "arrears": format_money(receivable - received),
        "collection_rate": f"{rate:.2f}" if rate is not None else "—",
        "arrears_rate": f"{HUNDRED - rate:.2f}" if rate is not None else "—",
    }

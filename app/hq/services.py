"""Group-wide figures: receivable, received, arrears and collection rate per company."""

from decimal import Decimal

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.hq.models import CompanyAccountCount, CompanySeasonTotal
from app.money import ZERO, format_money
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

    Accounts, receivable and received come from the account counts and company season
    totals (app/hq/totals.py), which each new account and ledger line updates in its own
    transaction. Received counts payments applied to
    the season, never more than an account's receivable, so a credit balance is not
    collection. The arrears rate is shown as 100 minus the collection rate so that the two
    displayed figures add up to 100.00.
    """
    companies = db.session.scalars(sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.number)).all()
    figures = {
        company_id: (receivable, received)
        for company_id, receivable, received in db.session.execute(
            sa.select(CompanySeasonTotal.company_id, CompanySeasonTotal.receivable, CompanySeasonTotal.received)
            .join(Season, sa.and_(Season.id == CompanySeasonTotal.season_id, Season.company_id == CompanySeasonTotal.company_id))
            .where(Season.name == season_name)
        )
    }
    account_counts = dict(db.session.execute(sa.select(CompanyAccountCount.company_id, CompanyAccountCount.accounts)).all())
    rows = []
    totals = {"accounts": 0, "receivable": ZERO, "received": ZERO}
    for company in companies:
        accounts = account_counts.get(company.id, 0)
        receivable, received = figures.get(company.id, (ZERO, ZERO))
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

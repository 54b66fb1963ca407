"""Ledger data for the HQ dashboard tests: TJ and QD imported and billed, some payments and waivers."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account
from app.org.models import User
from app.payments.services import collect_payment
from app.tariffs.models import Season

SEASON = "2025-2026"


def accounts_of(company, limit):
    return db.session.scalars(
        sa.select(Account).where(Account.company_id == company.id, Account.billing_status == "normal")
        .order_by(Account.account_no).limit(limit)
    ).all()


def post_line(account, kind, amount, at, key):
    """Post one ledger line of the 2025-2026 season at a given UTC time, through the ORM like the services do."""
    season = db.session.scalar(sa.select(Season).filter_by(company_id=account.company_id, name=SEASON))
    db.session.add(LedgerEntry(
        company_id=account.company_id, account_id=account.id, season_id=season.id, kind=kind, amount=Decimal(amount),
        cause_type="test", idempotency_key=key, created_at=at,
    ))
    db.session.commit()


@pytest.fixture
def hq_ledger(import_fixture, demo):
    """TJ, QD and SJZ billed for 2025-2026; three TJ counter payments today; two days ago one
    small waiver each on TJ and SJZ and five large ones on QD, which makes QD the outlier."""
    for code in ("TJ", "QD", "SJZ"):
        assert import_fixture(code, f"{code}-shared.xlsx").ok
        run_billing(code, SEASON)
    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    paid = accounts_of(demo["TJ"], 3)
    for account in paid:
        collect_payment(account, "100.00", "cash", cashier)
    two_days_ago = datetime.now(timezone.utc) - timedelta(days=2)
    tj_waived = accounts_of(demo["TJ"], 4)[3]
    post_line(tj_waived, "waiver", "-50.00", two_days_ago, "test-waiver-tj")
    post_line(accounts_of(demo["SJZ"], 1)[0], "waiver", "-80.00", two_days_ago, "test-waiver-sjz")
    for n, account in enumerate(accounts_of(demo["QD"], 5)):
        post_line(account, "waiver", "-300.00", two_days_ago, f"test-waiver-qd-{n}")
    return {"paid": paid, "tj_waived": tj_waived, "two_days_ago": two_days_ago}

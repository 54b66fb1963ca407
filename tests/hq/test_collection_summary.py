"""The HQ collection summary: received counts each account's payments only up to its receivable."""

from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.hq.services import collection_summary
from tests.hq.conftest import SEASON, accounts_of, post_line


def _tj(summary):
    return next(row for row in summary["companies"] if row["code"] == "TJ")


def _money(text):
    return Decimal(text.replace(",", ""))


def test_received_is_capped_per_account(import_fixture, demo):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    run_billing("TJ", SEASON)
    before = _tj(collection_summary(SEASON))
    partly, over, waived_then_paid = accounts_of(demo["TJ"], 3)
    charge = db.session.scalar(
        sa.select(LedgerEntry.amount).filter_by(account_id=over.id, kind="charge")
    )
    now = datetime.now(timezone.utc)
    # 100.00 paid on the first account counts whole.
    post_line(partly, "payment", "-100.00", now, "test-part")
    # The second pays its charge and 500.00 more: only the charge counts, the rest is credit.
    post_line(over, "payment", str(-(charge + Decimal("500.00"))), now, "test-over")
    # The third has 30.00 waived and pays 50.00: both lower the arrears, the payment counts 50.00.
    post_line(waived_then_paid, "waiver", "-30.00", now, "test-waiver")
    post_line(waived_then_paid, "payment", "-50.00", now, "test-paid")

    after = _tj(collection_summary(SEASON))
    assert _money(after["receivable"]) == _money(before["receivable"]) - Decimal("30.00")
    assert _money(after["received"]) == _money(before["received"]) + Decimal("100.00") + charge + Decimal("50.00")
    assert _money(after["arrears"]) == _money(after["receivable"]) - _money(after["received"])

"""Refunds of the part of a payment that paid late fees.

TJ-0001031 in TJ-shared.xlsx owes prior arrears 1960.43 and the 2025-2026 fee
136.32 m² × 25.00 = 3408.00. TJ charges 2‰ a day on the unpaid fee from 2026-01-01, so
the late fee posted as of 2026-01-31 is 3408.00 × 0.002 × 31 = 211.296, rounded once to
211.30. Paid in full, 5368.43 + 211.30 = 5579.73 posts 1960.43 to the arrears, 3408.00 to
the season and 211.30 as `late_fee_payment`.

A refund gives back each season's late fee before its receivable:
- 100.00 takes 100.00 of the late fee, so the account owes 100.00 (late fee);
- 3000.00 takes the other 111.30 of the late fee and 2888.70 of the season;
- the last 2479.73 takes 519.30 of the season and the 1960.43 of arrears.
"""

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.invariants import find_invariant_breaks
from app.billing.late_fees import post_late_fee
from app.billing.models import LedgerEntry
from app.extensions import db
from app.invoicing.services import payment_items, refund_items, refund_receipt_context
from app.payments.refunds import RefundError, refundable_amount, request_refund
from app.payments.services import amount_owed, collect_payment
from app.tariffs.models import Season

D = Decimal
LEGACY_NO = "TJ-0001031"


@pytest.fixture
def season(tj_account):
    account = tj_account(LEGACY_NO)
    return db.session.scalar(sa.select(Season).filter_by(company_id=account.company_id, name="2025-2026"))


@pytest.fixture
def paid_with_late_fee(tj_account, cashier, season):
    """TJ-0001031 with its late fee as of 2026-01-31 posted, then paid in full in cash."""
    account = tj_account(LEGACY_NO)
    line = post_late_fee(account, season, date(2026, 1, 31))
    db.session.commit()
    assert line.amount == D("211.30")
    assert amount_owed(account).total == D("5579.73")
    return collect_payment(account, "5579.73", "cash", cashier("tj_cashier"))


def _lines(cause_type, cause_id):
    return [
        (line.kind, line.season_id is not None, line.amount)
        for line in db.session.scalars(
            sa.select(LedgerEntry).filter_by(cause_type=cause_type, cause_id=cause_id).order_by(LedgerEntry.id)
        )
    ]


def _no_breaks(company_id, season):
    assert find_invariant_breaks(company_id, season.id) == []


def test_payment_receipt_lists_late_fee(paid_with_late_fee):
    payment = paid_with_late_fee
    assert _lines("payment", payment.id) == [
        ("payment", False, D("-1960.43")), ("payment", True, D("-3408.00")), ("late_fee_payment", True, D("-211.30")),
    ]
    items = payment_items(payment)
    assert items == [
        ("往年欠费", D("1960.43")), ("2025-2026 供暖季热费", D("3408.00")), ("2025-2026 供暖季滞纳金", D("211.30")),
    ]
    assert sum(amount for _, amount in items) == payment.amount


def test_payment_page_item_labels(paid_with_late_fee, login):
    payment = paid_with_late_fee
    client = login("tj_cashier")

    page = client.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert "<td>往年欠费</td>" in page
    assert "<td>2025-2026 供暖季热费</td>" in page
    assert "<td>2025-2026 供暖季滞纳金</td>" in page

    assert client.post("/language", data={"locale": "en"}).status_code in (302, 303)
    page = client.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert "<td>Prior-season arrears</td>" in page
    assert "<td>Heating fee, heating season 2025-2026</td>" in page
    assert "<td>Late fee, heating season 2025-2026</td>" in page
    assert "供暖季" not in page


def test_invisible_refund_reason_rejected(paid_with_late_fee, cashier):
    with pytest.raises(RefundError, match="请填写退费原因"):
        request_refund(paid_with_late_fee.id, "100.00", "\u3000\u200b", cashier("tj_cashier"))


def test_partial_refunds_give_late_fee_back_first(paid_with_late_fee, cashier, season):
    payment = paid_with_late_fee
    user = cashier("tj_cashier")

    first = request_refund(payment.id, "100.00", "滞纳金减免后退回", user)
    assert first.status == "succeeded"
    assert _lines("refund", first.id) == [("late_fee_refund", True, D("100.00"))]
    owed = amount_owed(payment.account)
    assert owed.total == D("100.00")
    assert owed.late_fees_outstanding == D("100.00")
    _no_breaks(payment.company_id, season)

    second = request_refund(payment.id, "3000.00", "面积核减", user)
    assert _lines("refund", second.id) == [("late_fee_refund", True, D("111.30")), ("refund", True, D("2888.70"))]
    owed = amount_owed(payment.account)
    assert owed.late_fees_outstanding == D("211.30")
    assert owed.current.outstanding == D("2888.70")
    assert owed.total == D("3100.00")
    _no_breaks(payment.company_id, season)

    items = refund_items(second)
    assert items == [("2025-2026 供暖季滞纳金退回", D("111.30")), ("2025-2026 供暖季热费退回", D("2888.70"))]
    context = refund_receipt_context(second)
    assert context["amount"] == "3000.00"
    assert context["payment_receipt_no"] == payment.receipt_no
    assert [amount for _, amount in context["items"]] == ["111.30", "2888.70"]

    third = request_refund(payment.id, "2479.73", "重复缴费", user)
    assert _lines("refund", third.id) == [("refund", True, D("519.30")), ("refund", False, D("1960.43"))]
    assert amount_owed(payment.account).total == D("5579.73")
    assert refundable_amount(payment) == D("0.00")
    _no_breaks(payment.company_id, season)
    with pytest.raises(RefundError, match="可退余额 0.00 元"):
        request_refund(payment.id, "0.01", "重复缴费", user)


def test_whole_refund_reverses_every_line(paid_with_late_fee, cashier, season):
    payment = paid_with_late_fee
    refund = request_refund(payment.id, "5579.73", "误收", cashier("tj_cashier"))
    assert refund.payment_id == payment.id
    assert _lines("refund", refund.id) == [
        ("late_fee_refund", True, D("211.30")), ("refund", True, D("3408.00")), ("refund", False, D("1960.43")),
    ]
    late_fee_lines = db.session.scalar(
        sa.select(sa.func.sum(LedgerEntry.amount)).where(
            LedgerEntry.account_id == payment.account_id,
            LedgerEntry.kind.in_(("late_fee_payment", "late_fee_refund")),
        )
    )
    assert late_fee_lines == D("0.00")
    owed = amount_owed(payment.account)
    assert owed.total == D("5579.73")
    assert owed.late_fees_outstanding == D("211.30")
    _no_breaks(payment.company_id, season)

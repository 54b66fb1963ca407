"""Counter payments post negative ledger lines, oldest receivable first, and nothing on bad input.

TJ-0001031 in TJ-shared.xlsx: 136.32 m² residential, normal, prior arrears 1960.43. The TJ
price is 25.00 yuan/m², so the 2025-2026 fee is 136.32 × 25.00 = 3408.00 and the account
owes 1960.43 + 3408.00 = 5368.43.
"""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import season_received
from app.extensions import db
from app.payments.models import Payment, ReceiptCounter
from app.payments.services import PaymentError, amount_owed, collect_payment

D = Decimal


def _payment_lines(payment):
    return db.session.scalars(
        sa.select(LedgerEntry).filter_by(cause_type="payment", cause_id=payment.id).order_by(LedgerEntry.id)
    ).all()


def _stored_counts():
    return (
        db.session.scalar(sa.select(sa.func.count()).select_from(Payment)),
        db.session.scalar(sa.select(sa.func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "payment")),
        db.session.scalar(sa.select(sa.func.count()).select_from(ReceiptCounter)),
    )


def test_amount_owed_breakdown(tj_account):
    owed = amount_owed(tj_account("TJ-0001031"))

    assert owed.arrears_outstanding == D("1960.43")
    assert owed.current.season.name == "2025-2026"
    assert owed.current.receivable == D("3408.00")
    assert owed.current.received == D("0.00")
    assert owed.current.outstanding == D("3408.00")
    assert owed.total == D("5368.43")


def test_full_payment_clears_both(tj_account, cashier):
    account = tj_account("TJ-0001031")

    payment = collect_payment(account, "5368.43", "cash", cashier("tj_cashier"))

    lines = _payment_lines(payment)
    assert [(line.season_id is None, line.amount) for line in lines] == [(True, D("-1960.43")), (False, D("-3408.00"))]
    assert all(line.kind == "payment" for line in lines)
    assert lines[0].idempotency_key == f"payment:{payment.id}:arrears"
    assert lines[1].idempotency_key == f"payment:{payment.id}:{payment.season_id}"
    assert payment.amount == D("5368.43")
    assert payment.payer_name == "廖凯"
    assert payment.channel == "counter"
    assert amount_owed(account).total == D("0.00")
    assert season_received(account.id, payment.season_id) == D("3408.00")


def test_partial_payment_pays_arrears_first(tj_account, cashier):
    account = tj_account("TJ-0001031")
    user = cashier("tj_cashier")

    first = collect_payment(account, "2918.25", "card", user, payer_name="廖凯家属")
    # 2918.25 − 1960.43 arrears = 957.82 goes to the season fee, so 3408.00 − 957.82 = 2450.18 is left.
    owed_after_first = amount_owed(account)
    second = collect_payment(account, "1000", "cash", user)

    assert [line.amount for line in _payment_lines(first)] == [D("-1960.43"), D("-957.82")]
    assert owed_after_first.arrears_outstanding == D("0.00")
    assert owed_after_first.total == D("2450.18")
    assert [(line.season_id is None, line.amount) for line in _payment_lines(second)] == [(False, D("-1000.00"))]
    assert amount_owed(account).total == D("1450.18")
    assert first.payer_name == "廖凯家属"
    assert first.method == "card"


def test_payment_below_arrears_posts_one_line(tj_account, cashier):
    account = tj_account("TJ-0001031")

    payment = collect_payment(account, "500.00", "cash", cashier("tj_cashier"))

    lines = _payment_lines(payment)
    assert [(line.season_id, line.amount) for line in lines] == [(None, D("-500.00"))]
    assert amount_owed(account).arrears_outstanding == D("1460.43")
    assert amount_owed(account).current.outstanding == D("3408.00")


def test_account_without_arrears_pays_season(tj_account, cashier):
    account = tj_account("TJ-0001001")  # 95.32 m² residential, no arrears: 95.32 × 25.00 = 2383.00

    payment = collect_payment(account, "2383.00", "cash", cashier("tj_cashier"))

    assert [(line.season_id is None, line.amount) for line in _payment_lines(payment)] == [(False, D("-2383.00"))]


def test_overpayment_rejected_nothing_stored(tj_account, cashier):
    account = tj_account("TJ-0001031")

    with pytest.raises(PaymentError) as caught:
        collect_payment(account, "5368.44", "cash", cashier("tj_cashier"))

    assert "5368.44" in str(caught.value)
    assert "5368.43" in str(caught.value)
    assert _stored_counts() == (0, 0, 0)


def test_paid_up_account_rejected(tj_account, cashier):
    account = tj_account("TJ-0001031")
    user = cashier("tj_cashier")
    collect_payment(account, "5368.43", "cash", user)

    with pytest.raises(PaymentError) as caught:
        collect_payment(account, "0.01", "cash", user)

    assert "没有欠费" in str(caught.value)
    assert _stored_counts()[0] == 1


@pytest.mark.parametrize(
    "amount, expected",
    [
        ("", "请填写收款金额"),
        ("0", "须大于 0"),
        ("-5", "须大于 0"),
        ("12.345", "两位小数"),
        ("abc", "「abc」不是有效数字"),
        ("NaN", "不是有效数字"),
        ("Infinity", "不是有效数字"),
        ("1e30", "不是有效数字"),
        ("1,50", "不是有效数字"),
        ("1000000000", "超过单笔上限"),
        (1.5, "浮点数"),
    ],
)
def test_bad_amount_rejected(amount, expected, tj_account, cashier):
    with pytest.raises(PaymentError) as caught:
        collect_payment(tj_account("TJ-0001031"), amount, "cash", cashier("tj_cashier"))

    assert expected in str(caught.value)
    assert _stored_counts() == (0, 0, 0)


def test_bad_method_rejected(tj_account, cashier):
    with pytest.raises(PaymentError) as caught:
        collect_payment(tj_account("TJ-0001031"), "100", "cheque", cashier("tj_cashier"))

    assert "cheque" in str(caught.value)
    assert _stored_counts() == (0, 0, 0)


def test_same_request_token_posts_once(tj_account, cashier):
    account = tj_account("TJ-0001031")
    user = cashier("tj_cashier")

    first = collect_payment(account, "100.00", "cash", user, request_token="form-1")
    again = collect_payment(account, "100.00", "cash", user, request_token="form-1")
    other = collect_payment(account, "100.00", "cash", user, request_token="form-2")

    assert again.id == first.id
    assert other.id != first.id
    assert _stored_counts()[:2] == (2, 2)


def test_counter_form_posts_payment(tj_account, login):
    account = tj_account("TJ-0001031")
    client = login("tj_cashier")

    response = client.post(
        f"/payments/accounts/{account.id}",
        data={"amount": "2918.25", "method": "cash", "payer_name": "", "note": "", "request_token": "tok-1"},
    )

    payment = db.session.scalar(sa.select(Payment))
    assert response.status_code == 302
    assert response.headers["Location"].endswith(f"/payments/{payment.id}")
    page = client.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert payment.receipt_no in page
    assert f"/payments/{payment.id}/receipt.pdf" in page
    assert "2450.18" in page  # left to pay


def test_counter_double_submit_posts_once(tj_account, login):
    account = tj_account("TJ-0001031")
    client = login("tj_cashier")
    form = {"amount": "100.00", "method": "card", "request_token": "tok-double"}

    first = client.post(f"/payments/accounts/{account.id}", data=form)
    second = client.post(f"/payments/accounts/{account.id}", data=form)

    assert first.status_code == 302
    assert second.headers["Location"] == first.headers["Location"]
    assert _stored_counts()[:2] == (1, 1)


@pytest.mark.parametrize(
    "amount, expected",
    [("6000", "超过该户应缴合计 5368.43 元"), ("12.345", "两位小数"), ("十元", "「十元」不是有效数字"), ("", "请填写收款金额")],
)
def test_counter_form_rejects_bad_amount(amount, expected, tj_account, login):
    account = tj_account("TJ-0001031")

    response = login("tj_cashier").post(
        f"/payments/accounts/{account.id}", data={"amount": amount, "method": "cash", "request_token": "tok-bad"}
    )

    assert response.status_code == 400
    assert expected in response.get_data(as_text=True)
    assert _stored_counts() == (0, 0, 0)

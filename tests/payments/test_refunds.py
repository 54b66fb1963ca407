"""Refunds of counter payments: partial, over-refund rejected, approval, concurrency, ledger identity.

TJ-0001031 in TJ-shared.xlsx owes prior arrears 1960.43 plus the 2025-2026 fee
136.32 m² × 25.00 = 3408.00, together 5368.43. Paid in full at the counter, the payment
posts 1960.43 to the arrears and 3408.00 to the season. A refund takes back the latest
season first: 3000.00 leaves the season owing 3000.00; a further 2368.43 takes the last
408.00 of the season and all 1960.43 of the arrears, so the account owes 5368.43 again.
"""

import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.invariants import find_invariant_breaks
from app.billing.models import LedgerEntry
from app.extensions import db
from app.org.models import Company, User
from app.payments.models import Payment, Refund
from app.payments.refunds import RefundError, decide_refund, refundable_amount, request_refund
from app.payments.services import amount_owed, collect_payment
from app.tariffs.models import Season
from app.tenancy import SYSTEM_SCOPE, set_scope

D = Decimal
LEGACY_NO = "TJ-0001031"


@pytest.fixture
def paid(tj_account, cashier):
    """TJ-0001031 paid in full (5368.43) in cash by tj_cashier."""
    account = tj_account(LEGACY_NO)
    payment = collect_payment(account, "5368.43", "cash", cashier("tj_cashier"))
    return payment


def _refund_lines(refund_id):
    return db.session.scalars(
        sa.select(LedgerEntry).filter_by(cause_type="refund", cause_id=refund_id).order_by(LedgerEntry.id)
    ).all()


def _no_breaks(company_id):
    season_id = db.session.scalar(sa.select(Season.id).filter_by(company_id=company_id, name="2025-2026"))
    assert find_invariant_breaks(company_id, season_id) == []


def test_partial_refunds_take_latest_season_first(paid, cashier):
    user = cashier("tj_cashier")
    first = request_refund(paid.id, "3000.00", "面积核减", user)
    assert first.status == "succeeded"
    assert first.channel == "counter"
    lines = _refund_lines(first.id)
    assert [(line.kind, line.season_id is not None, line.amount) for line in lines] == [("refund", True, D("3000.00"))]
    owed = amount_owed(paid.account)
    assert owed.total == D("3000.00")
    assert owed.arrears_outstanding == D("0.00")
    _no_breaks(paid.company_id)

    second = request_refund(paid.id, "2368.43", "重复缴费", user)
    assert [(line.season_id is not None, line.amount) for line in _refund_lines(second.id)] == [(True, D("408.00")), (False, D("1960.43"))]
    assert amount_owed(paid.account).total == D("5368.43")
    assert refundable_amount(paid) == D("0.00")
    _no_breaks(paid.company_id)
    # Each cash refund takes the next receipt number after the payment's.
    prefix, number = paid.receipt_no.rsplit("-", 1)
    assert [first.receipt_no, second.receipt_no] == [f"{prefix}-{int(number) + 1:06d}", f"{prefix}-{int(number) + 2:06d}"]


def test_refunds_beyond_payment_rejected(paid, cashier):
    user = cashier("tj_cashier")
    request_refund(paid.id, "3000.00", "面积核减", user)
    with pytest.raises(RefundError, match="可退余额 2368.43 元"):
        request_refund(paid.id, "2400.00", "重复缴费", user)
    for amount, message in (("0", "须大于 0"), ("1.001", "两位小数"), ("abc", "不是有效数字")):
        with pytest.raises(RefundError, match=message):
            request_refund(paid.id, amount, "x", user)
    with pytest.raises(RefundError, match="退费原因"):
        request_refund(paid.id, "1.00", " ", user)
    db.session.expire_all()
    refunds = db.session.scalars(sa.select(Refund)).all()
    assert [(r.amount, r.status) for r in refunds] == [(D("3000.00"), "succeeded")]


def test_same_form_submitted_twice(paid, cashier):
    user = cashier("tj_cashier")
    first = request_refund(paid.id, "100.00", "重复缴费", user, request_token="form-1")
    again = request_refund(paid.id, "100.00", "重复缴费", user, request_token="form-1")
    assert again.id == first.id
    assert refundable_amount(paid) == D("5268.43")


def test_approval_by_another_user(paid, cashier, demo):
    company = db.session.get(Company, paid.company_id)
    company.refund_requires_approval = True
    db.session.commit()
    requester, finance = cashier("tj_cashier"), cashier("tj_finance")

    refund = request_refund(paid.id, "500.00", "面积核减", requester)
    assert refund.status == "pending_approval"
    assert _refund_lines(refund.id) == []
    # A waiting refund counts against what is left, so it cannot be requested twice over.
    assert refundable_amount(paid) == D("4868.43")
    with pytest.raises(RefundError, match="不能审批自己"):
        decide_refund(refund.id, requester, True)

    decided = decide_refund(refund.id, finance, True)
    assert decided.status == "succeeded"
    assert decided.approved_by_id == finance.id
    assert sum(line.amount for line in _refund_lines(refund.id)) == D("500.00")
    with pytest.raises(RefundError, match="不能再审批"):
        decide_refund(refund.id, finance, False)

    rejected = request_refund(paid.id, "10.00", "误操作", requester)
    assert decide_refund(rejected.id, finance, False).status == "rejected"
    assert refundable_amount(paid) == D("4868.43")
    _no_breaks(paid.company_id)


def test_concurrent_refunds_one_wins(app, paid, cashier):
    """Two refunds of 3000.00 on a payment of 5368.43 at the same moment: one succeeds, one is rejected."""
    user_id, payment_id = cashier("tj_cashier").id, paid.id
    db.session.commit()
    barrier = threading.Barrier(2)
    outcomes = []

    def refund():
        with app.app_context():
            set_scope(SYSTEM_SCOPE)
            user = db.session.get(User, user_id)
            barrier.wait(timeout=10)
            try:
                outcomes.append(request_refund(payment_id, "3000.00", "并发", user).status)
            except RefundError as error:
                outcomes.append(str(error))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=refund) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(outcomes, key=len)[0] == "succeeded"
    assert "可退余额 2368.43 元" in sorted(outcomes, key=len)[1]
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.sum(Refund.amount))) == D("3000.00")
    assert amount_owed(db.session.get(Payment, payment_id).account).total == D("3000.00")


def test_refund_pages(paid, login, demo):
    company = db.session.get(Company, paid.company_id)
    company.refund_requires_approval = True
    db.session.commit()
    cashier_client = login("tj_cashier")
    page = cashier_client.get(f"/payments/{paid.id}")
    assert page.status_code == 200
    assert "申请退费" in page.get_data(as_text=True)

    over = cashier_client.post(f"/payments/{paid.id}/refunds", data={"amount": "9999.00", "reason": "x", "request_token": "t0"})
    assert over.status_code == 400
    assert "可退余额 5368.43 元" in over.get_data(as_text=True)
    response = cashier_client.post(f"/payments/{paid.id}/refunds", data={"amount": "200.00", "reason": "面积核减", "request_token": "t1"})
    assert response.status_code == 302
    refund = db.session.scalar(sa.select(Refund))
    assert refund.status == "pending_approval"

    # The cashier may not approve; finance may.
    assert cashier_client.post("/payments/refunds/decide", data={"refund_id": refund.id, "decision": "approve"}).status_code == 403
    finance = login("tj_finance")
    listing = finance.get("/payments/refunds")
    assert listing.status_code == 200
    assert "待审批" in listing.get_data(as_text=True)
    assert finance.post("/payments/refunds/decide", data={"refund_id": refund.id, "decision": "approve"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(Refund, refund.id).status == "succeeded"
    assert amount_owed(db.session.get(Payment, paid.id).account).total == D("200.00")

    # QD's finance sees none of it.
    qd_finance = login("qd_finance")
    assert qd_finance.post("/payments/refunds/decide", data={"refund_id": refund.id, "decision": "reject"}).status_code == 404
    assert "面积核减" not in qd_finance.get("/payments/refunds").get_data(as_text=True)


def test_approval_setting_by_company_admin(login, demo):
    admin = login("tj_admin")
    assert admin.get("/payments/refunds").status_code == 200
    assert admin.post("/payments/refunds/settings", data={"required": "1"}).status_code == 302
    db.session.expire_all()
    assert db.session.get(Company, demo["TJ"].id).refund_requires_approval is True
    assert db.session.get(Company, demo["QD"].id).refund_requires_approval is False
    assert admin.post("/payments/refunds/settings", data={"required": "maybe"}).status_code == 400
    assert login("tj_cashier").post("/payments/refunds/settings", data={"required": "0"}).status_code == 403
    assert login("hq_admin").post("/payments/refunds/settings", data={"required": "0"}).status_code == 403
    db.session.expire_all()
    assert db.session.get(Company, demo["TJ"].id).refund_requires_approval is True

"""Refunds of online payments go back through their channel: WeChat Pay (confirmed by notification) and Alipay."""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from alipay_helpers import TJ_APP_ID
from app.billing.invariants import find_invariant_breaks
from app.billing.models import LedgerEntry
from app.extensions import db
from app.network.models import Account
from app.org.models import User
from app.payments.models import Payment, PaymentNotification, Refund
from app.payments.refunds import RefundError, refundable_amount, request_refund
from app.payments.services import amount_owed
from app.tariffs.models import Season
from wechatpay_helpers import SUB_MCHIDS, accounts_of, paid_online_order, wait_for

pytestmark = pytest.mark.xdist_group("online-refunds")
D = Decimal


def _refunded(refund_id):
    db.session.expire_all()
    return db.session.get(Refund, refund_id).status == "succeeded"


def _no_breaks(company_id):
    season_id = db.session.scalar(sa.select(Season.id).filter_by(company_id=company_id, name="2025-2026"))
    assert find_invariant_breaks(company_id, season_id) == []


def test_wechat_partial_refunds_confirmed_by_notification(wechat):
    tj = wechat["demo"]["TJ"]
    simulator = wechat["simulator"]
    account = accounts_of(tj, 1)[0]
    owed = amount_owed(account).total
    order = paid_online_order(account, "wechat", simulator, SUB_MCHIDS["TJ"])
    payment = db.session.get(Payment, order.payment_id)
    user = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))

    refund = request_refund(payment.id, "100.00", "面积核减", user)
    assert refund.channel == "wechat"
    # The simulator may confirm the refund before this line reloads the row, so both are fine here.
    assert refund.status in ("processing", "succeeded")
    sent = simulator.orders[(SUB_MCHIDS["TJ"], order.out_trade_no)]["refunds"][refund.out_refund_no]
    assert sent["amount"]["refund"] == 10000
    assert sent["amount"]["total"] == int(owed * 100)
    # No ledger line until WeChat Pay confirms the refund.
    assert wait_for(lambda: _refunded(refund.id))
    lines = db.session.scalars(sa.select(LedgerEntry).filter_by(cause_type="refund", cause_id=refund.id)).all()
    assert sum(line.amount for line in lines) == D("100.00")
    assert amount_owed(db.session.get(Account, account.id)).total == D("100.00")
    assert db.session.scalar(sa.select(PaymentNotification.outcome).filter_by(event_type="REFUND.SUCCESS")) == "accepted"

    rest = owed - D("100.00")
    with pytest.raises(RefundError, match=f"可退余额 {rest} 元"):
        request_refund(payment.id, str(rest + D("0.01")), "重复缴费", user)
    last = request_refund(payment.id, str(rest), "重复缴费", user)
    assert wait_for(lambda: _refunded(last.id))
    assert amount_owed(db.session.get(Account, account.id)).total == owed
    assert refundable_amount(db.session.get(Payment, payment.id)) == D("0.00")
    _no_breaks(tj.id)


def test_alipay_refund_is_synchronous(alipay_world):
    tj = alipay_world["demo"]["TJ"]
    simulator = alipay_world["simulator"]
    account = accounts_of(tj, 1)[0]
    owed = amount_owed(account).total
    order = paid_online_order(account, "alipay", simulator, TJ_APP_ID)
    payment = db.session.get(Payment, order.payment_id)
    user = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))

    refund = request_refund(payment.id, "50.00", "面积核减", user)
    assert refund.status == "succeeded"
    call = simulator.calls[-1]
    assert call["method"] == "alipay.trade.refund"
    assert call["content"]["refund_amount"] == "50.00"
    assert call["content"]["out_request_no"] == refund.out_refund_no
    assert amount_owed(db.session.get(Account, account.id)).total == D("50.00")
    # Alipay also notifies the refund (refund_fee, out_biz_no). That notification either
    # finds the refund already completed by the synchronous answer (duplicate) or, when it
    # wins the race, completes it itself (accepted); the refund is booked once either way.
    assert wait_for(lambda: any(d["reply"] == b"success" and d["notify_id"] for d in list(simulator.deliveries)[1:]))
    outcomes = db.session.scalars(sa.select(PaymentNotification.outcome).where(PaymentNotification.event_type == "TRADE_SUCCESS")).all()
    assert len(outcomes) == 2 and outcomes.count("accepted") >= 1 and set(outcomes) <= {"accepted", "duplicate"}
    lines = db.session.scalars(sa.select(LedgerEntry).filter_by(cause_type="refund", cause_id=refund.id)).all()
    assert sum(line.amount for line in lines) == D("50.00")
    assert amount_owed(db.session.get(Account, account.id)).total == D("50.00")
    with pytest.raises(RefundError):
        request_refund(payment.id, str(owed), "重复缴费", user)
    _no_breaks(tj.id)

"""A pending notification that names another company's order or refund, read before the apply task runs."""

import json
import secrets

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.org.models import User
from app.org.services import scope_for
from app.payments.inbox import apply_pending, receive_notification
from app.payments.models import OnlineOrder, PaymentNotification
from app.payments.online import yuan_to_fen
from app.tenancy import scoped
from wechatpay_helpers import SP_MCHID, SUB_MCHIDS, accounts_of, signed_notification

pytestmark = pytest.mark.xdist_group("wechatpay")


def _row_text(row):
    return " ".join(str(getattr(row, column.name)) for column in PaymentNotification.__table__.columns) + json.dumps(
        row.payload, ensure_ascii=False
    )


def _qd_rows(qd):
    user = db.session.scalars(sa.select(User).filter_by(company_id=qd.id).order_by(User.id)).first()
    with scoped(scope_for(user)):
        filtered = db.session.scalars(sa.select(PaymentNotification).filter_by(company_id=qd.id)).all()
        unfiltered = db.session.scalars(sa.select(PaymentNotification)).all()
        db.session.rollback()
    return filtered, unfiltered


def _crossed(wechat, out_trade_no, amount):
    resource = {
        "sp_mchid": SP_MCHID, "sub_mchid": SUB_MCHIDS["QD"], "out_trade_no": out_trade_no,
        "transaction_id": "42000" + secrets.token_hex(10), "trade_type": "NATIVE", "trade_state": "SUCCESS", "attach": "",
        "success_time": "2026-01-10T10:00:00+08:00", "amount": {"total": yuan_to_fen(amount), "currency": "CNY"},
    }
    return signed_notification(wechat["keys"], resource)


def test_pending_row_hides_other_order(wechat, backend):
    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    account = accounts_of(tj, 1)[0]
    tj_order = OnlineOrder(company_id=tj.id, account_id=account.id, out_trade_no="T" + secrets.token_hex(12),
                           amount=10, sub_mchid=SUB_MCHIDS["TJ"])
    db.session.add(tj_order)
    db.session.commit()
    out_trade_no = tj_order.out_trade_no
    body, headers = _crossed(wechat, out_trade_no, tj_order.amount)

    receipt, _ = receive_notification("wechat", headers, body)
    assert (receipt.outcome, receipt.company_id) == ("pending", qd.id)
    filtered, unfiltered = _qd_rows(qd)
    assert [row.outcome for row in filtered] == ["pending"]
    for row in filtered:
        assert out_trade_no not in _row_text(row)
    assert filtered[0].payload["withheld"] is True
    if backend == "postgres":
        assert {row.company_id for row in unfiltered} == {qd.id}
        for row in unfiltered:
            assert out_trade_no not in _row_text(row)
    copies = db.session.scalars(sa.select(PaymentNotification).filter_by(company_id=None)).all()
    assert [(row.outcome, row.out_trade_no) for row in copies] == [("withheld", out_trade_no)]

    # A resend stores nothing new and its duplicate log row shows no order number either.
    assert receive_notification("wechat", headers, body)[0].outcome == "duplicate"
    filtered, _ = _qd_rows(qd)
    assert sorted(row.outcome for row in filtered) == ["duplicate", "pending"]
    for row in filtered:
        assert out_trade_no not in _row_text(row)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PaymentNotification).filter_by(company_id=None)) == 1

    apply_pending(qd.id)
    filtered, _ = _qd_rows(qd)
    rejected = [row for row in filtered if row.outcome == "rejected"]
    assert len(rejected) == 1
    assert rejected[0].reason.startswith("order '<order of another company>' not found for merchant")
    for row in filtered:
        assert out_trade_no not in _row_text(row)
    group = db.session.scalars(sa.select(PaymentNotification).filter_by(company_id=None)).all()
    assert [(row.outcome, row.out_trade_no) for row in group] == [("rejected", out_trade_no)]
    assert group[0].reason.startswith(f"merchant '{SUB_MCHIDS['QD']}' of company QD notified order '{out_trade_no}' of company TJ")


def test_unknown_order_restored_for_company(wechat):
    qd = wechat["demo"]["QD"]
    out_trade_no = "Q" + secrets.token_hex(12)
    body, headers = _crossed(wechat, out_trade_no, 12)
    assert receive_notification("wechat", headers, body)[0].outcome == "pending"
    apply_pending(qd.id)
    row = db.session.scalar(sa.select(PaymentNotification).filter_by(company_id=qd.id))
    # No company has the order, so QD reads its own notification whole, and no copy is left.
    assert row.outcome == "rejected"
    assert row.out_trade_no == out_trade_no
    assert f"order {out_trade_no!r} not found" in row.reason
    assert db.session.scalars(sa.select(PaymentNotification).filter_by(company_id=None)).all() == []


def test_other_company_refund_rejected(wechat, backend):
    from app.payments.refunds import request_refund
    from tools.wechatpay_simulator import build_notification
    from wechatpay_helpers import PLATFORM_SERIAL, paid_online_order

    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    order = paid_online_order(accounts_of(tj, 1)[0], "wechat", wechat["simulator"], SUB_MCHIDS["TJ"])
    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    refund = request_refund(order.payment_id, "1.00", "面积核减", cashier)
    out_trade_no, out_refund_no = order.out_trade_no, refund.out_refund_no
    # Validly signed, for QD's sub-merchant, naming TJ's order and refund.
    resource = {
        "sp_mchid": SP_MCHID, "sub_mchid": SUB_MCHIDS["QD"], "out_trade_no": out_trade_no,
        "transaction_id": "42000" + secrets.token_hex(10), "out_refund_no": out_refund_no,
        "refund_id": "50000" + secrets.token_hex(10), "refund_status": "SUCCESS",
        "success_time": "2026-01-10T10:00:00+08:00", "user_received_account": "支付用户零钱",
        "amount": {"total": 100, "refund": 100, "payer_total": 100, "payer_refund": 100, "currency": "CNY"},
    }
    keys = wechat["keys"]
    body, headers = build_notification(resource, keys["platform"], PLATFORM_SERIAL, keys["apiv3"], event_type="REFUND.SUCCESS")
    assert receive_notification("wechat", headers, body)[0].outcome == "pending"
    apply_pending(qd.id)

    filtered, unfiltered = _qd_rows(qd)
    assert [row.outcome for row in filtered] == ["rejected"]
    assert filtered[0].reason.startswith("refund '<refund of another company>' of order '<order of another company>' not found")
    for row in filtered + (unfiltered if backend == "postgres" else []):
        assert out_trade_no not in _row_text(row)
        assert out_refund_no not in _row_text(row)
    group = db.session.scalar(
        sa.select(PaymentNotification).filter_by(company_id=None, transaction_id=resource["transaction_id"])
    )
    assert group.outcome == "rejected"
    assert group.payload["out_refund_no"] == out_refund_no
    assert group.reason.startswith(
        f"merchant '{SUB_MCHIDS['QD']}' of company QD notified refund '{out_refund_no}' of order '{out_trade_no}' of company TJ"
    )

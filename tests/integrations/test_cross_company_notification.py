"""A notification that names one company's merchant and another company's order."""

import json
import secrets

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.org.models import Company, User
from app.org.services import scope_for
from app.payments.models import OnlineOrder, Payment, PaymentNotification
from app.payments.online import yuan_to_fen
from app.tenancy import scoped
from wechatpay_helpers import SP_MCHID, SUB_MCHIDS, accounts_of, order_notification, send, signed_notification, wait_for

pytestmark = pytest.mark.xdist_group("wechatpay")
NOTIFY_PATH = "/payments/notify/wechat"


def _user_of(company_id):
    return db.session.scalars(sa.select(User).filter_by(company_id=company_id).order_by(User.id)).first()


def _row_text(row):
    """Every stored value of a notification row as one string, to search for an identifier."""
    return " ".join(str(getattr(row, column.name)) for column in PaymentNotification.__table__.columns) + json.dumps(
        row.payload, ensure_ascii=False
    )


def test_qd_merchant_tj_order_hidden_from_qd(wechat, app, backend):
    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    tj_order, _, _, _ = order_notification(wechat["keys"], accounts_of(tj, 1)[0])
    transaction_id = "42000" + secrets.token_hex(10)
    # Validly signed by the channel, for QD's sub-merchant, with TJ's order number.
    resource = {
        "sp_mchid": SP_MCHID, "sub_mchid": SUB_MCHIDS["QD"], "out_trade_no": tj_order.out_trade_no,
        "transaction_id": transaction_id, "trade_type": "NATIVE", "trade_state": "SUCCESS", "attach": "",
        "success_time": "2026-01-10T10:00:00+08:00", "amount": {"total": yuan_to_fen(tj_order.amount), "currency": "CNY"},
    }
    body, headers = signed_notification(wechat["keys"], resource)
    assert send(wechat["server"] + NOTIFY_PATH, body, headers)[0] == 204

    def applied():
        db.session.expire_all()
        return db.session.scalar(sa.select(PaymentNotification.outcome).filter_by(transaction_id=transaction_id, company_id=qd.id))

    assert wait_for(lambda: applied() == "rejected")
    db.session.rollback()
    out_trade_no = tj_order.out_trade_no

    # QD's staff: a company view filters by company_id, and on PostgreSQL row-level security
    # limits even an unfiltered read to QD's rows.
    qd_user = _user_of(qd.id)
    with scoped(scope_for(qd_user)):
        filtered = db.session.scalars(sa.select(PaymentNotification).filter_by(company_id=qd.id)).all()
        unfiltered = db.session.scalars(sa.select(PaymentNotification)).all()
        db.session.rollback()
    assert [row.transaction_id for row in filtered] == [transaction_id]
    qd_row = filtered[0]
    assert qd_row.outcome == "rejected"
    assert qd_row.out_trade_no is None
    assert qd_row.payload is None
    assert qd_row.amount == tj_order.amount
    assert qd_row.reason.startswith("order '<order of another company>' not found for merchant")
    for row in filtered:
        assert out_trade_no not in _row_text(row)
    if backend == "postgres":
        assert {row.company_id for row in unfiltered} == {qd.id}
        for row in unfiltered:
            assert out_trade_no not in _row_text(row)

    # Headquarters reads the rejection with both companies named.
    hq = db.session.scalar(sa.select(Company).filter_by(is_headquarters=True))
    with scoped(scope_for(_user_of(hq.id))):
        group_rows = db.session.scalars(
            sa.select(PaymentNotification).where(PaymentNotification.company_id.is_(None), PaymentNotification.transaction_id == transaction_id)
        ).all()
        db.session.rollback()
    assert len(group_rows) == 1
    group_row = group_rows[0]
    assert group_row.outcome == "rejected"
    assert group_row.out_trade_no == out_trade_no
    assert group_row.payload["out_trade_no"] == out_trade_no
    assert group_row.reason.startswith(f"merchant '{SUB_MCHIDS['QD']}' of company QD notified order '{out_trade_no}' of company TJ: ")
    assert f"order '{out_trade_no}' not found" in group_row.reason
    assert qd_row.reason.endswith(f"(an order of another company; headquarters has it as notification {group_row.id})")

    # Nothing was posted, and TJ's order still waits for its own notification.
    assert db.session.scalars(sa.select(Payment).filter_by(channel_transaction_id=transaction_id)).all() == []
    assert db.session.get(OnlineOrder, tj_order.id).status == "pending"

"""WeChat Pay end to end: orders through the simulator, notifications to the live app over HTTP."""

import secrets
import time
from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import current_app

from app.billing.models import LedgerEntry
from app.extensions import db
from app.integrations import wechatpay
from app.network.models import Account
from app.payments.models import OnlineOrder, Payment, PaymentNotification
from app.payments.online import create_wechat_order, yuan_to_fen
from app.org.models import User
from app.payments.services import amount_owed, collect_payment
from notification_mix import (
    BAD_MESSAGES, MESSAGES_PER_SCALE, MIX_SCALE, PAID_COPIES, PAID_TARGETS, WRONG_AMOUNT_COPIES, WRONG_AMOUNT_TARGETS,
    build_stream, check_online_orders, count_containing, ledger_balances, rejection_reasons, send_stream,
)
from wechatpay_helpers import PLATFORM_SERIAL, SP_MCHID, SUB_MCHIDS, accounts_of, send, signed_notification, wait_for

pytestmark = pytest.mark.xdist_group("wechatpay")
NOTIFY_PATH = "/payments/notify/wechat"


def _resource(order, transaction_id=None, total=None):
    return {
        "sp_mchid": SP_MCHID, "sub_mchid": order.sub_mchid, "out_trade_no": order.out_trade_no,
        "transaction_id": transaction_id or "42000" + secrets.token_hex(10), "trade_type": "NATIVE",
        "trade_state": "SUCCESS", "attach": "", "success_time": "2026-01-10T10:00:00+08:00",
        "amount": {"total": yuan_to_fen(order.amount) if total is None else total, "currency": "CNY"},
    }


def _tj_order(account, amount=None):
    return OnlineOrder(
        company_id=account.company_id, account_id=account.id, out_trade_no="T" + secrets.token_hex(12),
        amount=amount if amount is not None else amount_owed(account).total, sub_mchid=SUB_MCHIDS["TJ"],
    )


def _wechat_lines(account_id):
    return db.session.scalars(
        sa.select(LedgerEntry).filter_by(account_id=account_id).where(LedgerEntry.idempotency_key.like("wechat:%"))
    ).all()


def test_simulator_payment_posted_once(wechat):
    tj = wechat["demo"]["TJ"]
    simulator = wechat["simulator"]
    account = accounts_of(tj, 1)[0]
    owed = amount_owed(account).total

    order = create_wechat_order(account)
    assert order.code_url.startswith("weixin://")
    sent = simulator.orders[(SUB_MCHIDS["TJ"], order.out_trade_no)]["request"]
    assert sent["sp_mchid"] == SP_MCHID
    assert sent["sub_mchid"] == SUB_MCHIDS["TJ"]
    assert sent["amount"] == {"total": yuan_to_fen(owed), "currency": "CNY"}

    transaction_id = simulator.pay(SUB_MCHIDS["TJ"], order.out_trade_no)
    assert wait_for(lambda: any(d["status"] == 204 for d in list(simulator.deliveries)))
    db.session.expire_all()
    # The same transaction delivered again, as the channel does when a reply is lost.
    body, headers = simulator.notification(simulator.transaction(SUB_MCHIDS["TJ"], order.out_trade_no))
    status, _ = send(wechat["server"] + NOTIFY_PATH, body, headers)
    assert status == 204

    db.session.expire_all()
    payments = db.session.scalars(sa.select(Payment).filter_by(channel_transaction_id=transaction_id)).all()
    assert len(payments) == 1
    assert payments[0].amount == owed
    assert payments[0].company_id == tj.id
    assert amount_owed(db.session.get(Account, account.id)).total == 0
    assert db.session.get(OnlineOrder, order.id).status == "paid"
    outcomes = Counter(db.session.scalars(sa.select(PaymentNotification.outcome).filter_by(transaction_id=transaction_id)))
    assert outcomes == {"accepted": 1, "duplicate": 1}


def test_retries_until_receiver_accepts(wechat):
    simulator = wechat["simulator"]
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    order = create_wechat_order(account)
    # Until the platform key is configured, deliveries are rejected and the simulator retries.
    saved = current_app.config["WECHATPAY_PLATFORM_KEY_FILES"]
    current_app.config["WECHATPAY_PLATFORM_KEY_FILES"] = {"OTHER": saved[PLATFORM_SERIAL]}
    simulator.pay(SUB_MCHIDS["TJ"], order.out_trade_no)
    assert wait_for(lambda: len(simulator.deliveries) >= 2)
    current_app.config["WECHATPAY_PLATFORM_KEY_FILES"] = saved
    assert wait_for(lambda: any(d["status"] == 204 for d in list(simulator.deliveries)))
    statuses = [d["status"] for d in list(simulator.deliveries)]
    assert statuses[0] == 400
    assert statuses[-1] == 204
    assert len(statuses) <= 6
    db.session.expire_all()
    assert db.session.get(OnlineOrder, order.id).status == "paid"


def test_tj_payment_settles_under_tj(wechat):
    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    keys = wechat["keys"]
    url = wechat["server"] + NOTIFY_PATH
    account = accounts_of(tj, 1)[0]
    order = create_wechat_order(account)
    assert order.sub_mchid == SUB_MCHIDS["TJ"]
    qd_before = db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(company_id=qd.id))

    # A validly signed notification claiming QD's sub-merchant for TJ's order is stored for QD,
    # and applying it under QD finds no QD order.
    resource = _resource(order)
    resource["sub_mchid"] = SUB_MCHIDS["QD"]
    status, reply = send(url, *signed_notification(keys, resource))
    assert status == 204
    assert reply == b""

    status, _ = send(url, *signed_notification(keys, _resource(order)))
    assert status == 204
    db.session.expire_all()
    payment = db.session.scalar(sa.select(Payment).filter_by(account_id=account.id, channel="wechat"))
    assert payment.company_id == tj.id
    assert db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(company_id=qd.id)) == qd_before
    rejected = db.session.scalar(sa.select(PaymentNotification).filter_by(outcome="rejected", company_id=qd.id))
    assert "not found" in rejected.reason
    # QD's row does not show TJ's order number, and the group's row keeps it for headquarters.
    assert order.out_trade_no not in rejected.reason
    assert rejected.out_trade_no is None
    group = db.session.scalar(sa.select(PaymentNotification).filter_by(outcome="rejected", company_id=None))
    assert group.out_trade_no == order.out_trade_no


def test_paid_twice_keeps_credit(wechat):
    tj = wechat["demo"]["TJ"]
    keys = wechat["keys"]
    account = accounts_of(tj, 1)[0]
    order = create_wechat_order(account)
    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    collect_payment(account, str(order.amount), "cash", cashier)

    status, _ = send(wechat["server"] + NOTIFY_PATH, *signed_notification(keys, _resource(order)))
    assert status == 204
    db.session.expire_all()
    lines = _wechat_lines(account.id)
    assert [(line.kind, line.amount) for line in lines] == [("credit", -order.amount)]
    assert amount_owed(db.session.get(Account, account.id)).total == 0


def test_wrong_amount_held_not_posted(wechat):
    keys = wechat["keys"]
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    order = create_wechat_order(account)
    status, _ = send(wechat["server"] + NOTIFY_PATH, *signed_notification(keys, _resource(order, total=1)))
    assert status == 204
    db.session.expire_all()
    assert db.session.get(OnlineOrder, order.id).status == "held"
    assert _wechat_lines(account.id) == []
    log = db.session.scalar(sa.select(PaymentNotification))
    assert log.outcome == "held"
    assert "differs" in log.reason


def test_mixed_notifications_exact_balances(wechat):
    """2,000 notifications (× HEATFLOW_NOTIFICATION_MIX_SCALE): duplicates, reordering, tampering, bad signatures, stale and wrong amounts."""
    scale = MIX_SCALE
    keys = wechat["keys"]
    url = wechat["server"] + NOTIFY_PATH
    accounts = accounts_of(wechat["demo"]["TJ"], PAID_TARGETS + WRONG_AMOUNT_TARGETS)
    assert len(accounts) == PAID_TARGETS + WRONG_AMOUNT_TARGETS
    paid_orders = [_tj_order(a) for a in accounts[:PAID_TARGETS]]
    held_orders = [_tj_order(a, amount=Decimal("100.00")) for a in accounts[PAID_TARGETS:]]
    db.session.add_all(paid_orders + held_orders)
    db.session.commit()
    owed_before = {a.id: amount_owed(a).total for a in accounts}
    balances_before = ledger_balances(list(owed_before))

    # Each message is signed when it is sent, with its timestamp offset, so a long run does
    # not push valid ones out of the 300-second replay window.
    resources = {order.id: _resource(order) for order in paid_orders}
    resources.update({order.id: _resource(order, total=9999) for order in held_orders})
    messages = build_stream(
        20260110, [("valid", paid_orders, PAID_COPIES * scale), ("wrong_amount", held_orders, WRONG_AMOUNT_COPIES * scale)],
        ("tampered", "wrong_signature", "stale", "unknown_serial"), paid_orders, scale,
    )
    assert len(messages) == MESSAGES_PER_SCALE * scale

    def deliver(message):
        offset = -wechatpay.REPLAY_WINDOW_SECONDS - 1 if message.kind == "stale" else message.offset
        key = keys["attacker"] if message.kind == "wrong_signature" else None
        serial = "PUB_KEY_ID_UNKNOWN" if message.kind == "unknown_serial" else PLATFORM_SERIAL
        resource = resources[message.target.id]
        body, headers = signed_notification(keys, resource, timestamp=int(time.time()) + offset, platform_key=key, serial=serial)
        if message.kind == "tampered":
            body = body.replace(b'"summary"', b'"Summary"')
        return send(url, body, headers)[0]

    replies = send_stream(messages, deliver)
    bad = BAD_MESSAGES * scale // 4
    assert replies == {("valid", 204): 1000 * scale, ("wrong_amount", 204): 40 * scale, ("tampered", 400): bad,
                       ("wrong_signature", 400): bad, ("stale", 400): bad, ("unknown_serial", 400): bad}

    check_online_orders("wechat", paid_orders, held_orders, owed_before, balances_before)
    reasons = rejection_reasons("wechat")
    assert reasons["invalid signature"] == 2 * bad
    assert reasons["unknown Wechatpay-Serial 'PUB_KEY_ID_UNKNOWN'"] == bad
    assert count_containing(reasons, "outside the 300-second window") == bad


def test_order_page_shows_qr_and_status(wechat, login):
    simulator = wechat["simulator"]
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    owed = amount_owed(account).total
    client = login("tj_cashier")
    url = f"/payments/accounts/{account.id}/online"

    assert client.post(url, data={"channel": "bitcoin"}).status_code == 400
    response = client.post(url, data={"channel": "wechat"})
    assert response.status_code == 302
    order = db.session.scalar(sa.select(OnlineOrder).filter_by(account_id=account.id))
    assert order.amount == owed
    page = client.get(url).get_data(as_text=True)
    assert "<svg" in page
    assert order.code_url in page
    assert "待支付" in page

    simulator.pay(SUB_MCHIDS["TJ"], order.out_trade_no)
    assert wait_for(lambda: any(d["status"] == 204 for d in list(simulator.deliveries)))
    page = client.get(url + "?refresh=1").get_data(as_text=True)
    assert "已支付" in page
    assert "查看收款与收据" in page
    # QD's cashier cannot open TJ's account page.
    assert login("qd_cashier").get(url).status_code == 404

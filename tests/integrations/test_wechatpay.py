"""WeChat Pay end to end: orders through the simulator, notifications to the live app over HTTP."""

import json
import os
import random
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
from wechatpay_helpers import PLATFORM_SERIAL, SP_MCHID, SUB_MCHIDS, accounts_of, send, signed_notification, wait_for

pytestmark = pytest.mark.xdist_group("wechatpay")
NOTIFY_PATH = "/payments/notify/wechat"
# Multiplies the 2,000 notifications of the mixed test; 5 sends the 10,000 of the acceptance run.
NOTIFICATION_MIX_SCALE = int(os.environ.get("HEATFLOW_NOTIFICATION_MIX_SCALE", "1"))


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

    # A validly signed notification claiming QD's sub-merchant for TJ's order finds no QD order.
    resource = _resource(order)
    resource["sub_mchid"] = SUB_MCHIDS["QD"]
    status, reply = send(url, *signed_notification(keys, resource))
    assert status == 400
    assert json.loads(reply)["code"] == "FAIL"

    status, _ = send(url, *signed_notification(keys, _resource(order)))
    assert status == 204
    db.session.expire_all()
    payment = db.session.scalar(sa.select(Payment).filter_by(account_id=account.id, channel="wechat"))
    assert payment.company_id == tj.id
    assert db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(company_id=qd.id)) == qd_before
    rejected = db.session.scalar(sa.select(PaymentNotification).filter_by(outcome="rejected"))
    assert rejected.company_id == qd.id
    assert "not found" in rejected.reason


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
    scale = NOTIFICATION_MIX_SCALE
    total = 2000 * scale
    keys = wechat["keys"]
    url = wechat["server"] + NOTIFY_PATH
    accounts = accounts_of(wechat["demo"]["TJ"], 48)
    assert len(accounts) == 48
    paid_orders = [_tj_order(a) for a in accounts[:40]]
    held_orders = [_tj_order(a, amount=Decimal("100.00")) for a in accounts[40:]]
    db.session.add_all(paid_orders + held_orders)
    db.session.commit()
    owed_before = {a.id: amount_owed(a).total for a in accounts}

    rng = random.Random(20260110)
    # Each message is signed when it is sent, with its kind's timestamp offset, so a long run
    # does not push valid ones out of the 300-second replay window.
    messages = []  # (kind, resource, timestamp offset in seconds, signing key or None, serial)
    for order in paid_orders:
        resource = _resource(order)
        for _ in range(25 * scale):
            messages.append(("valid", resource, rng.randint(-60, 60), None, PLATFORM_SERIAL))
    for order in held_orders:
        resource = _resource(order, total=9999)
        for _ in range(5 * scale):
            messages.append(("wrong_amount", resource, 0, None, PLATFORM_SERIAL))
    for index in range(960 * scale):
        resource = _resource(rng.choice(paid_orders))
        kind = ("tampered", "wrong_signature", "stale", "unknown_serial")[index % 4]
        offset = -wechatpay.REPLAY_WINDOW_SECONDS - 1 if kind == "stale" else 0
        key = keys["attacker"] if kind == "wrong_signature" else None
        serial = "PUB_KEY_ID_UNKNOWN" if kind == "unknown_serial" else PLATFORM_SERIAL
        messages.append((kind, resource, offset, key, serial))
    rng.shuffle(messages)
    assert len(messages) == total

    started = time.monotonic()
    statuses = Counter()
    for kind, resource, offset, key, serial in messages:
        assert time.monotonic() - started < 300 * scale, f"{total} notifications took over {5 * scale} minutes"
        body, headers = signed_notification(keys, resource, timestamp=int(time.time()) + offset, platform_key=key, serial=serial)
        if kind == "tampered":
            body = body.replace(b'"summary"', b'"Summary"')
        status, _ = send(url, body, headers)
        statuses[(kind, status)] += 1
    bad = 240 * scale
    assert statuses == {("valid", 204): 1000 * scale, ("wrong_amount", 204): 40 * scale, ("tampered", 400): bad,
                        ("wrong_signature", 400): bad, ("stale", 400): bad, ("unknown_serial", 400): bad}

    db.session.expire_all()
    for order in paid_orders:
        lines = _wechat_lines(order.account_id)
        assert sum(line.amount for line in lines) == -order.amount, order.out_trade_no
        assert amount_owed(db.session.get(Account, order.account_id)).total == 0
        assert db.session.get(OnlineOrder, order.id).status == "paid"
    for order in held_orders:
        assert _wechat_lines(order.account_id) == []
        assert amount_owed(db.session.get(Account, order.account_id)).total == owed_before[order.account_id]
        assert db.session.get(OnlineOrder, order.id).status == "held"

    outcomes = Counter(db.session.scalars(sa.select(PaymentNotification.outcome)))
    assert outcomes == {"accepted": 40, "duplicate": 1000 * scale - 40 + 40 * scale - 8, "held": 8, "rejected": 4 * bad}
    reasons = Counter(db.session.scalars(sa.select(PaymentNotification.reason).filter_by(outcome="rejected")))
    assert reasons["invalid signature"] == 2 * bad
    assert reasons["unknown Wechatpay-Serial 'PUB_KEY_ID_UNKNOWN'"] == bad
    stale = sum(count for reason, count in reasons.items() if "outside the 300-second window" in reason)
    assert stale == bad
    assert db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(channel="wechat")) == 40


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

"""Alipay end to end: precreate orders through the simulator, notifications to the live app over HTTP."""

import secrets
import urllib.parse
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from alipay_helpers import ISV_APP_ID, QD_APP_ID, QD_AUTH_TOKEN, TJ_APP_ID, paid_params as _paid, post_form
from app.billing.models import LedgerEntry
from app.extensions import db
from app.integrations import alipay
from app.integrations.channel import CHINA_TIME
from app.network.models import Account
from app.payments.models import OnlineOrder, Payment, PaymentNotification
from app.payments.online import create_online_order
from app.payments.services import amount_owed
from notification_mix import (
    BAD_MESSAGES, MESSAGES_PER_SCALE, MIX_SCALE, PAID_TARGETS, WRONG_AMOUNT_COPIES, WRONG_AMOUNT_TARGETS,
    build_stream, check_online_orders, count_containing, ledger_balances, rejection_reasons, send_stream,
)
from wechatpay_helpers import accounts_of, wait_for

pytestmark = pytest.mark.xdist_group("alipay")
NOTIFY_PATH = "/payments/notify/alipay"


def _alipay_lines(account_id):
    return db.session.scalars(
        sa.select(LedgerEntry).filter_by(account_id=account_id).where(LedgerEntry.idempotency_key.like("alipay:%"))
    ).all()


def test_signing_text_rules():
    params = {"b": "2", "a": "1", "sign": "x", "sign_type": "RSA2", "empty": "", "c": "中 文"}
    assert alipay.signing_text(params) == "a=1&b=2&c=中 文&sign_type=RSA2"
    assert alipay.signing_text(params, exclude=("sign", "sign_type")) == "a=1&b=2&c=中 文"


def test_response_signature_covers_raw_object(alipay_keys):
    simulator_key = alipay_keys["alipay"]
    raw = '{"code":"10000","msg":"Success","qr_code":"https://qr.alipay.com/x"}'
    signature = alipay.rsa2_sign(simulator_key, raw)
    text = f'{{"alipay_trade_precreate_response":{raw},"sign":"{signature}"}}'
    response = alipay.verify_response(text, "alipay.trade.precreate", simulator_key.public_key())
    assert response["qr_code"] == "https://qr.alipay.com/x"
    # The same object with other whitespace is not the signed text.
    spaced = text.replace('"code":"10000"', '"code": "10000"')
    with pytest.raises(alipay.AlipayError, match="signature is invalid"):
        alipay.verify_response(spaced, "alipay.trade.precreate", simulator_key.public_key())


def test_direct_app_payment_posted_once(alipay_world):
    tj = alipay_world["demo"]["TJ"]
    simulator = alipay_world["simulator"]
    account = accounts_of(tj, 1)[0]
    owed = amount_owed(account).total

    order = create_online_order(account, "alipay")
    assert order.code_url.startswith("https://qr.alipay.com/")
    call = simulator.calls[-1]
    assert call["method"] == "alipay.trade.precreate"
    assert call["app_id"] == TJ_APP_ID
    assert call["content"]["total_amount"] == f"{owed:.2f}"

    trade_no = simulator.pay(TJ_APP_ID, order.out_trade_no)
    assert wait_for(lambda: any(d["reply"] == b"success" for d in list(simulator.deliveries)))
    # Alipay sends the same notification again when it missed the reply.
    params = simulator.notification_params(simulator.orders[(TJ_APP_ID, order.out_trade_no)])
    status, reply = post_form(alipay_world["server"] + NOTIFY_PATH, simulator.sign_notification(params))
    assert (status, reply) == (200, b"success")
    # TRADE_FINISHED of the same trade later: still the same payment.
    params = simulator.notification_params(simulator.orders[(TJ_APP_ID, order.out_trade_no)], {"trade_status": "TRADE_FINISHED"})
    status, reply = post_form(alipay_world["server"] + NOTIFY_PATH, simulator.sign_notification(params))
    assert reply == b"success"

    db.session.expire_all()
    payments = db.session.scalars(sa.select(Payment).filter_by(channel_transaction_id=trade_no)).all()
    assert len(payments) == 1
    assert payments[0].amount == owed
    assert payments[0].company_id == tj.id
    assert payments[0].channel == "alipay"
    assert amount_owed(db.session.get(Account, account.id)).total == 0
    assert sum(line.amount for line in _alipay_lines(account.id)) == -owed
    outcomes = Counter(db.session.scalars(sa.select(PaymentNotification.outcome).filter_by(transaction_id=trade_no)))
    assert outcomes == {"accepted": 1, "duplicate": 2}


def test_isv_order_routes_by_auth_app_id(alipay_world):
    qd, tj = alipay_world["demo"]["QD"], alipay_world["demo"]["TJ"]
    simulator = alipay_world["simulator"]
    url = alipay_world["server"] + NOTIFY_PATH
    account = accounts_of(qd, 1)[0]
    order = create_online_order(account, "alipay")
    call = simulator.calls[-1]
    # Signed by the group's app, acting for QD through QD's token.
    assert call["app_id"] == ISV_APP_ID
    assert call["merchant"] == QD_APP_ID
    assert order.sub_mchid == QD_APP_ID

    # A validly signed notification naming TJ's app for QD's order finds no TJ order.
    forged = _paid(simulator, order, auth_app_id=TJ_APP_ID)
    status, reply = post_form(url, simulator.sign_notification(forged))
    assert reply == b"fail"
    # The ISV app notifying without auth_app_id acts for itself, which no company is.
    params = _paid(simulator, order)
    del params["auth_app_id"]
    status, reply = post_form(url, simulator.sign_notification(params))
    assert reply == b"fail"

    status, reply = post_form(url, simulator.sign_notification(_paid(simulator, order)))
    assert (status, reply) == (200, b"success")
    db.session.expire_all()
    payment = db.session.scalar(sa.select(Payment).filter_by(account_id=account.id, channel="alipay"))
    assert payment.company_id == qd.id
    assert db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(company_id=tj.id)) == 0
    reasons = db.session.scalars(sa.select(PaymentNotification.reason).filter_by(outcome="rejected")).all()
    assert len(reasons) == 2
    assert any("do not match the company's own app" in reason for reason in reasons)
    assert any(f"app id '{ISV_APP_ID}' is unknown" in reason for reason in reasons)
    assert QD_AUTH_TOKEN not in " ".join(reasons)


def test_tampered_stale_and_unsigned_rejected(alipay_world, alipay_keys):
    simulator = alipay_world["simulator"]
    url = alipay_world["server"] + NOTIFY_PATH
    account = accounts_of(alipay_world["demo"]["TJ"], 1)[0]
    order = create_online_order(account, "alipay")
    params = _paid(simulator, order)

    body = simulator.sign_notification(params)
    tampered = body.replace(b"total_amount=" + urllib.parse.quote(params["total_amount"]).encode(), b"total_amount=0.01")
    assert tampered != body
    stale_time = (datetime.now(CHINA_TIME) - timedelta(seconds=alipay.REPLAY_WINDOW_SECONDS + 5)).strftime(alipay.TIMESTAMP_FORMAT)
    stale = simulator.sign_notification(dict(params, notify_time=stale_time))
    attacker = alipay_keys["attacker"]
    forged = dict(params, sign_type="RSA2")
    forged["sign"] = alipay.rsa2_sign(attacker, alipay.signing_text(forged, exclude=("sign", "sign_type")))
    rsa1 = urllib.parse.urlencode(dict(forged, sign_type="RSA")).encode()
    gbk = simulator.sign_notification(dict(params, charset="GBK"))
    cases = (tampered, stale, urllib.parse.urlencode(forged).encode(), rsa1, b"notify_id=1&app_id=" + TJ_APP_ID.encode(), gbk)
    for case in cases:
        assert post_form(url, case)[1] == b"fail"

    db.session.expire_all()
    assert db.session.get(OnlineOrder, order.id).status == "pending"
    assert _alipay_lines(account.id) == []
    reasons = Counter(db.session.scalars(sa.select(PaymentNotification.reason).filter_by(outcome="rejected")))
    assert reasons["invalid signature"] == 2
    assert sum(n for reason, n in reasons.items() if "outside the 600-second window" in reason) == 1
    assert reasons["unsupported sign_type 'RSA'"] == 1
    assert sum(n for reason, n in reasons.items() if reason.startswith("unsupported charset 'GBK'")) == 1
    assert sum(n for reason, n in reasons.items() if reason.startswith("missing field")) == 1


def test_wrong_amount_held_and_close(alipay_world):
    simulator = alipay_world["simulator"]
    url = alipay_world["server"] + NOTIFY_PATH
    first, second = accounts_of(alipay_world["demo"]["TJ"], 2)
    held = create_online_order(first, "alipay")
    status, reply = post_form(url, simulator.sign_notification(_paid(simulator, held, total_amount="0.01")))
    assert reply == b"success"

    unpaid = create_online_order(second, "alipay")
    stored = simulator.orders[(TJ_APP_ID, unpaid.out_trade_no)]
    stored["status"], stored["trade_no"] = "TRADE_CLOSED", "2026011022001000000000000009"
    status, reply = post_form(url, simulator.sign_notification(simulator.notification_params(stored)))
    assert reply == b"success"

    db.session.expire_all()
    order = db.session.get(OnlineOrder, held.id)
    assert order.status == "held"
    assert "0.01" in order.review_reason
    assert _alipay_lines(first.id) == []
    assert db.session.get(OnlineOrder, unpaid.id).status == "closed"


def test_resends_until_success(alipay_world, monkeypatch, app):
    simulator = alipay_world["simulator"]
    account = accounts_of(alipay_world["demo"]["TJ"], 1)[0]
    order = create_online_order(account, "alipay")
    # Until the app's keys are configured, notifications fail and Alipay resends them.
    saved = dict(app.config["ALIPAY_APP_KEY_FILES"])
    app.config["ALIPAY_APP_KEY_FILES"] = {ISV_APP_ID: saved[ISV_APP_ID]}
    simulator.pay(TJ_APP_ID, order.out_trade_no)
    assert wait_for(lambda: len(simulator.deliveries) >= 2)
    app.config["ALIPAY_APP_KEY_FILES"] = saved
    assert wait_for(lambda: any(d["reply"] == b"success" for d in list(simulator.deliveries)))
    deliveries = list(simulator.deliveries)
    assert deliveries[0]["reply"] == b"fail"
    assert len({d["notify_id"] for d in deliveries}) == 1
    assert len(deliveries) <= 5
    db.session.expire_all()
    assert db.session.get(OnlineOrder, order.id).status == "paid"
    assert amount_owed(db.session.get(Account, account.id)).total == Decimal("0.00")


def test_mixed_notifications_exact_balances(alipay_world, alipay_keys):
    """2,000 notifications (× HEATFLOW_NOTIFICATION_MIX_SCALE): resends, reordering, tampering, bad signatures, stale and wrong amounts."""
    scale = MIX_SCALE
    simulator = alipay_world["simulator"]
    url = alipay_world["server"] + NOTIFY_PATH
    accounts = accounts_of(alipay_world["demo"]["TJ"], PAID_TARGETS + WRONG_AMOUNT_TARGETS)
    assert len(accounts) == PAID_TARGETS + WRONG_AMOUNT_TARGETS
    orders = [create_online_order(account, "alipay") for account in accounts]
    paid_orders, held_orders = orders[:PAID_TARGETS], orders[PAID_TARGETS:]
    owed_before = {a.id: amount_owed(a).total for a in accounts}
    balances_before = ledger_balances(list(owed_before))
    # One notify_id per order, as Alipay keeps it across resends. Held orders are notified at 0.01.
    params = {order.id: _paid(simulator, order) for order in paid_orders}
    params.update({order.id: _paid(simulator, order, total_amount="0.01") for order in held_orders})
    unknown_app_id = "2021000000000999"

    # 15 of each paid order's 25 copies are resends, 10 are TRADE_FINISHED under a new notify_id.
    messages = build_stream(
        20260111,
        [("valid", paid_orders, 15 * scale), ("valid_finished", paid_orders, 10 * scale),
         ("wrong_amount", held_orders, WRONG_AMOUNT_COPIES * scale)],
        ("tampered", "wrong_signature", "stale", "unknown_app"), paid_orders, scale,
    )
    assert len(messages) == MESSAGES_PER_SCALE * scale

    def deliver(message):
        fields = dict(params[message.target.id])
        offset = -alipay.REPLAY_WINDOW_SECONDS - 5 if message.kind == "stale" else message.offset
        fields["notify_time"] = (datetime.now(CHINA_TIME) + timedelta(seconds=offset)).strftime(alipay.TIMESTAMP_FORMAT)
        if message.kind == "valid_finished":
            fields.update(trade_status="TRADE_FINISHED", notify_id=secrets.token_hex(16))
        if message.kind == "unknown_app":
            fields["app_id"] = unknown_app_id
        body = simulator.sign_notification(fields)
        if message.kind == "tampered":
            body = body.replace(b"total_amount=" + urllib.parse.quote(fields["total_amount"]).encode(), b"total_amount=0.01")
        if message.kind == "wrong_signature":
            fields["sign_type"] = alipay.SIGN_TYPE
            fields["sign"] = alipay.rsa2_sign(alipay_keys["attacker"], alipay.signing_text(fields, exclude=("sign", "sign_type")))
            body = urllib.parse.urlencode(fields).encode()
        return post_form(url, body)[1].decode()

    replies = send_stream(messages, deliver)
    bad = BAD_MESSAGES * scale // 4
    assert replies == {
        ("valid", "success"): 600 * scale, ("valid_finished", "success"): 400 * scale, ("wrong_amount", "success"): 40 * scale,
        ("tampered", "fail"): bad, ("wrong_signature", "fail"): bad, ("stale", "fail"): bad, ("unknown_app", "fail"): bad,
    }

    check_online_orders("alipay", paid_orders, held_orders, owed_before, balances_before)
    for order in held_orders:
        assert "0.01" in db.session.get(OnlineOrder, order.id).review_reason
    reasons = rejection_reasons("alipay")
    assert reasons["invalid signature"] == 2 * bad
    assert reasons[f"unknown app_id '{unknown_app_id}'"] == bad
    assert count_containing(reasons, f"outside the {alipay.REPLAY_WINDOW_SECONDS}-second window") == bad

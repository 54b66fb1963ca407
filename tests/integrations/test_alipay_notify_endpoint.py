"""Hostile requests to POST /payments/notify/alipay on the WSGI route in front of Flask.

Alipay reads only the reply body: exactly `success` stops its resends, and every error reply
is the plain text `fail`.
"""

import logging
import urllib.parse
from collections import Counter
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from alipay_helpers import FORM, paid_params, post_form
from app.extensions import db
from app.integrations import alipay
from app.integrations.channel import CHINA_TIME
from app.network.models import Account
from app.payments.models import OnlineOrder, Payment, PaymentNotification
from app.payments.online import create_online_order
from notify_endpoint_common import (
    deliver_at_once, end_app_connections, logged_notifications, notification_database_down, stored_payments,
)
from wechatpay_helpers import accounts_of, raw_request

pytestmark = pytest.mark.xdist_group("alipay")
NOTIFY_PATH = "/payments/notify/alipay"


def _logged(outcome=None):
    return logged_notifications(outcome, channel="alipay")


def _paid_order(alipay_world, account=None):
    """Place an order for a TJ account and return (order, signed notification body, trade_no)."""
    account = account or accounts_of(alipay_world["demo"]["TJ"], 1)[0]
    order = create_online_order(account, "alipay")
    params = paid_params(alipay_world["simulator"], order)
    return order, alipay_world["simulator"].sign_notification(params), params["trade_no"]


def test_reply_formats_of_alipay(alipay_world, app):
    order, body, trade_no = _paid_order(alipay_world)
    client = app.test_client()

    rejected = client.post(NOTIFY_PATH, data=body.replace(b"total_amount=", b"total_amount=1", 1), headers=FORM)
    assert rejected.status_code == 400
    assert rejected.data == b"fail"
    assert rejected.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert rejected.headers["Content-Length"] == "4"
    assert rejected.headers["X-Frame-Options"] == "DENY"
    # The lean route sets no session cookie.
    assert "Set-Cookie" not in rejected.headers

    accepted = client.post(NOTIFY_PATH, data=body, headers=FORM)
    assert accepted.status_code == 200
    assert accepted.data == b"success"
    assert accepted.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Set-Cookie" not in accepted.headers
    payments = stored_payments(trade_no)
    assert len(payments) == 1
    assert payments[0].amount == order.amount


def test_alipay_short_body_gets_400(alipay_world, live_server_url, caplog):
    _, body, trade_no = _paid_order(alipay_world)
    host = urllib.parse.urlsplit(live_server_url).netloc
    # Declares 50 bytes more than it sends, then closes its side of the connection.
    head = (
        f"POST {NOTIFY_PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {FORM['Content-Type']}\r\n"
        f"Content-Length: {len(body) + 50}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")

    reply = raw_request(live_server_url, head, body)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.endswith(b"400 BAD REQUEST")
    assert rest.endswith(b"\r\n\r\nfail")
    assert b"Content-Type: text/plain; charset=utf-8" in rest
    assert "body shorter than Content-Length" in caplog.text
    assert _logged() == []
    assert stored_payments(trade_no) == []

    # The full delivery afterwards posts the payment once.
    assert post_form(live_server_url + NOTIFY_PATH, body) == (200, b"success")
    assert len(stored_payments(trade_no)) == 1


def test_alipay_oversize_body_gets_413(alipay_world, app, monkeypatch, caplog):
    _, body, trade_no = _paid_order(alipay_world)
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 4096)
    padded = body + b"&padding=" + b"x" * 8192

    response = app.test_client().post(NOTIFY_PATH, data=padded, headers=FORM)
    assert response.status_code == 413
    assert response.data == b"fail"
    assert f"Content-Length {len(padded)} is over the limit" in caplog.text
    assert _logged() == []
    assert stored_payments(trade_no) == []


def test_alipay_bad_signatures_rejected_once(alipay_world, alipay_keys, app):
    order, _, trade_no = _paid_order(alipay_world)
    params = paid_params(alipay_world["simulator"], order)
    forged = dict(params, sign_type=alipay.SIGN_TYPE)
    forged["sign"] = alipay.rsa2_sign(alipay_keys["attacker"], alipay.signing_text(forged, exclude=("sign", "sign_type")))
    garbled = dict(forged, sign="!!!not base64")
    unsigned = {name: value for name, value in forged.items() if name != "sign"}
    client = app.test_client()

    for case, reason in (
        (forged, "invalid signature"), (garbled, "invalid signature"), (unsigned, "missing field sign"),
    ):
        response = client.post(NOTIFY_PATH, data=urllib.parse.urlencode(case).encode(), headers=FORM)
        assert response.status_code == 400, reason
        assert response.data == b"fail", reason
    assert [(row.outcome, row.reason) for row in _logged()] == [
        ("rejected", "invalid signature"), ("rejected", "invalid signature"), ("rejected", "missing field sign"),
    ]
    assert stored_payments(trade_no) == []
    assert db.session.get(OnlineOrder, order.id).status == "pending"


@pytest.mark.parametrize(
    "body",
    [b"", b"\xff\xfe not a form", b"notify_id=1&notify_id=2", b"app_id=\x00&sign=x", b"x" * (2 * 1024 * 1024)],
    ids=["empty", "not-utf8", "repeated-field", "nul-byte", "2MiB"],
)
def test_alipay_foreign_body_rejected(alipay_world, app, body):
    response = app.test_client().post(NOTIFY_PATH, data=body, headers=FORM)
    assert response.status_code == 400
    assert response.data == b"fail"
    logged = _logged()
    assert len(logged) == 1
    assert logged[0].outcome == "rejected"
    assert logged[0].company_id is None
    assert db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(channel="alipay")) == 0


def test_alipay_replays_post_once(alipay_world, live_server_url):
    order, body, trade_no = _paid_order(alipay_world)
    url = live_server_url + NOTIFY_PATH

    assert post_form(url, body) == (200, b"success")
    # The same signed body captured and sent again gets "success" but is never posted twice.
    for _ in range(3):
        assert post_form(url, body) == (200, b"success")
    # A signed notification older than the replay window is rejected, whatever it reports.
    stale_time = (datetime.now(CHINA_TIME) - timedelta(seconds=alipay.REPLAY_WINDOW_SECONDS + 5)).strftime(alipay.TIMESTAMP_FORMAT)
    stale = alipay_world["simulator"].sign_notification(
        paid_params(alipay_world["simulator"], order, notify_time=stale_time, notify_id="0" * 32)
    )
    assert post_form(url, stale) == (400, b"fail")

    assert len(stored_payments(trade_no)) == 1
    assert Counter(row.outcome for row in _logged()) == {"accepted": 1, "duplicate": 3, "rejected": 1}
    assert f"outside the {alipay.REPLAY_WINDOW_SECONDS}-second window" in _logged("rejected")[0].reason


def test_alipay_concurrent_duplicates_post_once(alipay_world, app):
    _, body, trade_no = _paid_order(alipay_world)
    deliveries = 8
    replies = deliver_at_once(app, lambda server: post_form(server + NOTIFY_PATH, body), deliveries)

    assert replies == [(200, b"success")] * deliveries
    outcomes = sorted(row.outcome for row in _logged())
    assert outcomes == ["accepted"] + ["duplicate"] * (deliveries - 1)
    assert len(stored_payments(trade_no)) == 1


def test_alipay_lost_connection_stores_once(alipay_world, app, backend, owner_engine, caplog):
    if backend != "postgres":
        pytest.skip("the pipelined INSERT on its own engine runs on PostgreSQL only")
    first, second = accounts_of(alipay_world["demo"]["TJ"], 2)
    second_id = second.id
    client = app.test_client()
    _, body, _ = _paid_order(alipay_world, first)
    assert client.post(NOTIFY_PATH, data=body, headers=FORM).data == b"success"
    assert end_app_connections(app, owner_engine) >= 1

    order, body, trade_no = _paid_order(alipay_world, db.session.get(Account, second_id))
    with caplog.at_level(logging.WARNING):
        response = client.post(NOTIFY_PATH, data=body, headers=FORM)
    assert (response.status_code, response.data) == (200, b"success")
    assert "Notification insert lost its database connection, sending it again" in caplog.text
    stored = db.session.scalars(sa.select(PaymentNotification).filter_by(transaction_id=trade_no)).all()
    assert [row.outcome for row in stored] == ["accepted"]
    payments = stored_payments(trade_no)
    assert len(payments) == 1
    assert payments[0].amount == order.amount


def test_alipay_database_down_gets_503(alipay_world, app, backend, caplog):
    if backend != "postgres":
        pytest.skip("the pipelined INSERT on its own engine runs on PostgreSQL only")
    _, body, trade_no = _paid_order(alipay_world)
    # Every connection of the notification engine is refused.
    with notification_database_down(app):
        response = app.test_client().post(NOTIFY_PATH, data=body, headers=FORM)
    assert response.status_code == 503
    assert response.data == b"fail"
    assert response.headers["Retry-After"] == "5"
    assert "Database connection failed on POST /payments/notify/alipay" in caplog.text
    assert stored_payments(trade_no) == []
    assert [row for row in _logged() if row.transaction_id == trade_no] == []

    # Alipay sends it again once the database is back, and it is posted once.
    assert app.test_client().post(NOTIFY_PATH, data=body, headers=FORM).data == b"success"
    assert len(stored_payments(trade_no)) == 1

"""The WSGI route of POST /payments/notify/wechat in front of Flask: replies, key rotation, a lost connection."""

import logging
import os

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization

from app.extensions import db
from app.network.models import Account
from app.payments.models import PaymentNotification
from notify_endpoint_common import end_app_connections, notification_database_down, stored_payments
from wechatpay_helpers import PLATFORM_SERIAL, accounts_of, order_notification

pytestmark = pytest.mark.xdist_group("wechatpay")
NOTIFY_PATH = "/payments/notify/wechat"


def test_rejected_reply_has_headers(wechat, app):
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    _, transaction_id, body, headers = order_notification(wechat["keys"], account)
    tampered = body.replace(b'"resource"', b'"resource" ', 1)

    response = app.test_client().post(NOTIFY_PATH, data=tampered, headers=headers)
    assert response.status_code == 400
    assert response.get_json() == {"code": "FAIL", "message": "invalid signature"}
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Content-Length"] == str(len(response.data))
    assert stored_payments(transaction_id) == []


def test_get_falls_through_to_flask(app_ctx):
    response = app_ctx.test_client().get(NOTIFY_PATH)
    assert response.status_code == 405


def test_platform_key_rotated_in_place(wechat, app, tmp_path, monkeypatch):
    keys = wechat["keys"]
    key_file = tmp_path / "platform_public.pem"

    def write_public_key(private_key, mtime_ns):
        key_file.write_bytes(private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
        ))
        os.utime(key_file, ns=(mtime_ns, mtime_ns))

    write_public_key(keys["platform"], 1_000_000_000_000_000_000)
    monkeypatch.setitem(app.config, "WECHATPAY_PLATFORM_KEY_FILES", {PLATFORM_SERIAL: str(key_file)})
    first, second = accounts_of(wechat["demo"]["TJ"], 2)
    client = app.test_client()

    _, old_transaction, body, headers = order_notification(keys, first)
    assert client.post(NOTIFY_PATH, data=body, headers=headers).status_code == 204
    assert len(stored_payments(old_transaction)) == 1

    # The channel's new certificate replaces the file under the same serial. Tests check
    # the file on every request (CHANNEL_KEY_CHECK_S = 0), so the next request uses it.
    new_platform_key = keys["attacker"]
    write_public_key(new_platform_key, 1_000_000_001_000_000_000)
    _, stale_transaction, body, headers = order_notification(keys, second)
    response = client.post(NOTIFY_PATH, data=body, headers=headers)
    assert response.status_code == 400
    assert response.get_json()["message"] == "invalid signature"
    _, new_transaction, body, headers = order_notification(keys, second, platform_key=new_platform_key)
    assert client.post(NOTIFY_PATH, data=body, headers=headers).status_code == 204
    assert stored_payments(stale_transaction) == []
    assert len(stored_payments(new_transaction)) == 1


def test_lost_connection_stores_once(wechat, app, backend, owner_engine, caplog):
    if backend != "postgres":
        pytest.skip("the pipelined INSERT on its own engine runs on PostgreSQL only")
    first, second = accounts_of(wechat["demo"]["TJ"], 2)
    second_id = second.id
    client = app.test_client()
    _, transaction_id, body, headers = order_notification(wechat["keys"], first)
    assert client.post(NOTIFY_PATH, data=body, headers=headers).status_code == 204
    assert end_app_connections(app, owner_engine) >= 1

    order, transaction_id, body, headers = order_notification(wechat["keys"], db.session.get(Account, second_id))
    with caplog.at_level(logging.WARNING):
        assert client.post(NOTIFY_PATH, data=body, headers=headers).status_code == 204
    assert "Notification insert lost its database connection, sending it again" in caplog.text
    stored = db.session.scalars(sa.select(PaymentNotification).filter_by(transaction_id=transaction_id)).all()
    assert [row.outcome for row in stored] == ["accepted"]
    payments = stored_payments(transaction_id)
    assert len(payments) == 1
    assert payments[0].amount == order.amount


def test_database_down_gets_503(wechat, app, backend, caplog):
    if backend != "postgres":
        pytest.skip("the pipelined INSERT on its own engine runs on PostgreSQL only")
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    _, transaction_id, body, headers = order_notification(wechat["keys"], account)
    # Every connection of the notification engine is refused.
    with notification_database_down(app):
        response = app.test_client().post(NOTIFY_PATH, data=body, headers=headers)
    assert response.status_code == 503
    assert response.get_json() == {"code": "FAIL", "message": "database unavailable, nothing stored"}
    assert response.headers["Retry-After"] == "5"
    assert "Database connection failed on POST /payments/notify/wechat" in caplog.text
    assert stored_payments(transaction_id) == []

    # WeChat Pay sends it again once the database is back, and it is posted once.
    assert app.test_client().post(NOTIFY_PATH, data=body, headers=headers).status_code == 204
    assert len(stored_payments(transaction_id)) == 1

"""Hostile requests to POST /payments/notify/wechat: odd headers, broken bodies, replays."""

import urllib.parse

import pytest

from notify_endpoint_common import deliver_at_once, logged_notifications, stored_payments
from wechatpay_helpers import accounts_of, order_notification, raw_request, send

pytestmark = pytest.mark.xdist_group("wechatpay")
NOTIFY_PATH = "/payments/notify/wechat"


def test_superscript_timestamp_rejected(wechat, app):
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    _, transaction_id, body, headers = order_notification(wechat["keys"], account)
    headers = dict(headers)
    headers["Wechatpay-Timestamp"] = "\u00b2"
    response = app.test_client().post(NOTIFY_PATH, data=body, headers=headers)
    assert response.status_code == 400, response.data
    rejected = logged_notifications("rejected")
    assert len(rejected) == 1
    assert "Wechatpay-Timestamp" in rejected[0].reason
    assert stored_payments(transaction_id) == []


def test_short_body_gets_400(wechat, app, live_server_url, caplog):
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    _, transaction_id, body, headers = order_notification(wechat["keys"], account)
    host = urllib.parse.urlsplit(live_server_url).netloc
    signed = "".join(f"{name}: {value}\r\n" for name, value in headers.items() if name.lower() != "content-length")
    # Declares 50 bytes more than it sends, then closes its side of the connection.
    head = (
        f"POST {NOTIFY_PATH} HTTP/1.1\r\nHost: {host}\r\n{signed}"
        f"Content-Length: {len(body) + 50}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")

    reply = raw_request(live_server_url, head, body)
    status_line, _, rest = reply.partition(b"\r\n")
    assert status_line.endswith(b"400 BAD REQUEST")
    assert rest.endswith(b'{"code": "FAIL", "message": "request body is shorter than its Content-Length"}')
    assert "body shorter than Content-Length" in caplog.text
    assert logged_notifications() == []
    assert stored_payments(transaction_id) == []

    # The full delivery afterwards posts the payment once.
    assert send(live_server_url + NOTIFY_PATH, body, headers)[0] == 204
    assert len(stored_payments(transaction_id)) == 1


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("Wechatpay-Timestamp", "1", "Wechatpay-Timestamp 1 is outside the 300-second window"),
        ("Wechatpay-Timestamp", "9" * 5000, "invalid Wechatpay-Timestamp '99999999999999999999'"),
        ("Wechatpay-Signature", "!!!", "invalid signature"),
        ("Wechatpay-Serial", "\u00e9" * 300, "unknown Wechatpay-Serial '" + "\u00e9" * 64 + "'"),
        ("Wechatpay-Nonce", "", "missing header Wechatpay-Nonce"),
    ],
)
def test_bad_header_rejected_once(wechat, app, header, value, reason):
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    _, transaction_id, body, headers = order_notification(wechat["keys"], account)
    client = app.test_client()

    response = client.post(NOTIFY_PATH, data=body, headers={**headers, header: value})
    assert response.status_code == 400
    assert response.get_json() == {"code": "FAIL", "message": reason}
    assert [(row.outcome, row.reason) for row in logged_notifications()] == [("rejected", reason)]
    assert stored_payments(transaction_id) == []


@pytest.mark.parametrize("body", [b"", b"\xff\xfe not json", b"x" * (2 * 1024 * 1024)], ids=["empty", "not-utf8", "2MiB"])
def test_foreign_body_rejected(wechat, app, body):
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    _, transaction_id, _, headers = order_notification(wechat["keys"], account)

    response = app.test_client().post(NOTIFY_PATH, data=body, headers=headers)
    assert response.status_code == 400
    assert response.get_json() == {"code": "FAIL", "message": "invalid signature"}
    assert [(row.outcome, row.reason) for row in logged_notifications()] == [("rejected", "invalid signature")]
    assert stored_payments(transaction_id) == []


def test_concurrent_duplicates_post_once(wechat, app):
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    _, transaction_id, body, headers = order_notification(wechat["keys"], account)
    deliveries = 8
    statuses = deliver_at_once(app, lambda server: send(server + NOTIFY_PATH, body, headers)[0], deliveries)

    assert statuses == [204] * deliveries
    outcomes = sorted(row.outcome for row in logged_notifications())
    assert outcomes == ["accepted"] + ["duplicate"] * (deliveries - 1)
    assert len(stored_payments(transaction_id)) == 1


def test_oversize_body_gets_413(wechat, app, monkeypatch, caplog):
    account = accounts_of(wechat["demo"]["TJ"], 1)[0]
    _, transaction_id, body, headers = order_notification(wechat["keys"], account)
    monkeypatch.setitem(app.config, "MAX_CONTENT_LENGTH", 4096)
    padded = body + b" " * 8192

    response = app.test_client().post(NOTIFY_PATH, data=padded, headers=headers)
    assert response.status_code == 413
    assert response.get_json() == {"code": "FAIL", "message": "request body is too large"}
    assert f"Content-Length {len(padded)} is over the limit" in caplog.text
    assert logged_notifications() == []
    assert stored_payments(transaction_id) == []

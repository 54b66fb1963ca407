"""Helpers of the WeChat Pay tests: constants, accounts that owe, sending and signing notifications.

The Alipay tests use the channel-neutral ones too: accounts_of, wait_for and raw_request.
"""

import secrets
import socket
import time
import urllib.parse
import urllib.error
import urllib.request

import sqlalchemy as sa

from app.extensions import db
from app.network.models import Account
from tools.wechatpay_simulator import build_notification

SP_MCHID = "1900000100"
MERCHANT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD2C9F0001"
PLATFORM_SERIAL = "PUB_KEY_ID_0119000001002024000000000000000001"
SUB_MCHIDS = {"TJ": "1900000111", "QD": "1900000112"}


def accounts_of(company, limit):
    """The first `limit` normal-status accounts of a company that owe something, by id."""
    from app.payments.services import amount_owed

    rows = db.session.scalars(
        sa.select(Account).filter_by(company_id=company.id, billing_status="normal").order_by(Account.id).limit(limit * 2)
    ).all()
    return [a for a in rows if amount_owed(a).total > 0][:limit]


def order_notification(keys, account, platform_key=None, amount=None):
    """Place an order for `amount` (default what `account` owes); return (order, transaction id, body, headers) of its signed notification."""
    from app.payments.models import OnlineOrder
    from app.payments.online import yuan_to_fen
    from app.payments.services import amount_owed

    order = OnlineOrder(
        company_id=account.company_id, account_id=account.id, out_trade_no="T" + secrets.token_hex(12),
        amount=amount_owed(account).total if amount is None else amount, sub_mchid=SUB_MCHIDS["TJ"],
    )
    db.session.add(order)
    db.session.commit()
    transaction_id = "42000" + secrets.token_hex(10)
    resource = {
        "sp_mchid": SP_MCHID, "sub_mchid": order.sub_mchid, "out_trade_no": order.out_trade_no,
        "transaction_id": transaction_id, "trade_type": "NATIVE", "trade_state": "SUCCESS", "attach": "",
        "success_time": "2026-01-10T10:00:00+08:00", "amount": {"total": yuan_to_fen(order.amount), "currency": "CNY"},
    }
    body, headers = signed_notification(keys, resource, platform_key=platform_key)
    return order, transaction_id, body, headers


def send(url, body, headers):
    """POST raw bytes to the app and return (status, body bytes)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def signed_notification(keys, resource, timestamp=None, platform_key=None, serial=PLATFORM_SERIAL):
    """A notification body and headers, signed by the platform key unless another is given."""
    return build_notification(resource, platform_key or keys["platform"], serial, keys["apiv3"], timestamp)


def wait_for(condition, timeout_s=15.0, step_s=0.02):
    """Poll `condition` until it is true or `timeout_s` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    value = condition()
    while not value and time.monotonic() < deadline:
        time.sleep(step_s)
        value = condition()
    return value



def paid_online_order(account, channel, simulator, merchant):
    """Place an order for what `account` owes, pay it in the simulator and wait until its notification posted it."""
    from app.payments.models import OnlineOrder
    from app.payments.online import create_online_order

    order = create_online_order(account, channel)
    simulator.pay(merchant, order.out_trade_no)
    assert wait_for(lambda: (db.session.expire_all() or db.session.get(OnlineOrder, order.id).status) == "paid")
    return db.session.get(OnlineOrder, order.id)


def raw_request(url, head, body=b"", shutdown=True, timeout=10):
    """Send raw bytes to the live server and return the whole reply."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head + body)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)

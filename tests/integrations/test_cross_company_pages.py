"""No page, API endpoint or export shows QD's users TJ's order number planted in QD's flows; headquarters reads it.

TJ's order number reaches QD through QD's merchant: a payment notification, a refund
notification and a statement line that name TJ's order. The URLs come from the app's
url_map, so a new page under the listed prefixes is checked without changing this test.
"""

import io
import re
import secrets
import zlib
from datetime import date, datetime, timezone
from decimal import Decimal
from itertools import product

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook
from werkzeug.routing import AnyConverter

from app.clock import LOCAL_TIME
from app.extensions import db
from app.integrations.statement import StatementLine
from app.invoicing.models import Invoice
from app.network.models import Community
from app.org.models import User
from app.payments.inbox import apply_pending, receive_notification
from app.payments.models import Refund
from app.payments.online import yuan_to_fen
from app.payments.reconciliation import reconcile
from app.payments.refunds import request_refund
from app.processes.models import ProcessInstance
from tools.wechatpay_simulator import build_notification
from wechatpay_helpers import PLATFORM_SERIAL, SP_MCHID, SUB_MCHIDS, accounts_of, paid_online_order, signed_notification

pytestmark = pytest.mark.xdist_group("wechatpay")
# Pages and endpoints that show payments, online orders, refunds, notifications,
# reconciliation differences or their exports.
CHECKED_PREFIXES = ("/payments", "/invoicing", "/hq", "/api/v1", "/reconciliation", "/billing/arrears")
STATEMENT_DAY = date(2026, 1, 10)
QD_USERS = ("qd_finance", "qd_cashier", "qd_admin")


def _planted(wechat):
    """Plant TJ's order and refund numbers in QD's notifications and reconciliation; return ids for the URL arguments."""
    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    simulator, keys = wechat["simulator"], wechat["keys"]
    tj_order = paid_online_order(accounts_of(tj, 1)[0], "wechat", simulator, SUB_MCHIDS["TJ"])
    qd_order = paid_online_order(accounts_of(qd, 1)[0], "wechat", simulator, SUB_MCHIDS["QD"])
    tj_refund = request_refund(tj_order.payment_id, "1.00", "面积核减", db.session.scalar(sa.select(User).filter_by(username="tj_cashier")))
    qd_refund = request_refund(qd_order.payment_id, "1.00", "面积核减", db.session.scalar(sa.select(User).filter_by(username="qd_cashier")))
    secret = {"order": tj_order.out_trade_no, "refund": tj_refund.out_refund_no}

    paid = {
        "sp_mchid": SP_MCHID, "sub_mchid": SUB_MCHIDS["QD"], "out_trade_no": secret["order"],
        "transaction_id": "42000" + secrets.token_hex(10), "trade_type": "NATIVE", "trade_state": "SUCCESS", "attach": "",
        "success_time": "2026-01-10T10:00:00+08:00", "amount": {"total": yuan_to_fen(tj_order.amount), "currency": "CNY"},
    }
    body, headers = signed_notification(keys, paid)
    assert receive_notification("wechat", headers, body)[0].outcome == "pending"
    refunded = {
        "sp_mchid": SP_MCHID, "sub_mchid": SUB_MCHIDS["QD"], "out_trade_no": secret["order"],
        "transaction_id": "42000" + secrets.token_hex(10), "out_refund_no": secret["refund"],
        "refund_id": "50000" + secrets.token_hex(10), "refund_status": "SUCCESS",
        "success_time": "2026-01-10T10:00:00+08:00", "user_received_account": "支付用户零钱",
        "amount": {"total": 100, "refund": 100, "payer_total": 100, "payer_refund": 100, "currency": "CNY"},
    }
    body, headers = build_notification(refunded, keys["platform"], PLATFORM_SERIAL, keys["apiv3"], event_type="REFUND.SUCCESS")
    assert receive_notification("wechat", headers, body)[0].outcome == "pending"
    apply_pending(qd.id)

    at = datetime(2026, 1, 10, 10, tzinfo=LOCAL_TIME).astimezone(timezone.utc)
    line = StatementLine("wechatpay", SUB_MCHIDS["QD"], "4200000" + secrets.token_hex(8), secret["order"], "payment", Decimal("9.00"), at)
    reconcile(qd.id, "wechatpay", SUB_MCHIDS["QD"], STATEMENT_DAY, [line])

    def first(model, company):
        return db.session.scalar(sa.select(model.id).filter_by(company_id=company.id).order_by(model.id).limit(1))

    arguments = {
        "payment_id": [qd_order.payment_id, tj_order.payment_id],
        "account_id": [qd_order.account_id, tj_order.account_id],
        "refund_id": [qd_refund.id, tj_refund.id],
        "invoice_id": [first(Invoice, qd) or 0, first(Invoice, tj) or 0],
        "instance_id": [first(ProcessInstance, qd) or 0, first(ProcessInstance, tj) or 0],
        "community_id": [first(Community, qd), first(Community, tj)],
        "code": ["QD", "TJ"],
    }
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Refund)) == 2
    return secret, arguments


def _checked_urls(app, arguments):
    """Return every GET URL under CHECKED_PREFIXES with each combination of argument values, and the rules left unfilled."""
    urls, unfilled = [], []
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if "GET" not in rule.methods or not rule.rule.startswith(CHECKED_PREFIXES):
            continue
        choices = {}
        for name in sorted(rule.arguments):
            converter = rule._converters.get(name)
            if isinstance(converter, AnyConverter):
                choices[name] = sorted(converter.items)
            elif name in arguments:
                choices[name] = arguments[name]
            else:
                unfilled.append(f"{rule.rule} ({name})")
        if len(choices) != len(rule.arguments):
            continue
        names = list(choices)
        for values in product(*(choices[name] for name in names)):
            path = rule.build(dict(zip(names, values)), append_unknown=False)[1]
            urls.append(path)
    return list(dict.fromkeys(urls)), unfilled


def _readable_text(response):
    """Return the text a reader can get from a response: headers, HTML or JSON, spreadsheet cells, PDF streams."""
    parts = [f"{name}: {value}" for name, value in response.headers.items()]
    data = response.get_data()
    parts.append(data.decode("utf-8", errors="replace"))
    if data.startswith(b"PK"):
        workbook = load_workbook(io.BytesIO(data), read_only=True)
        for sheet in workbook.worksheets:
            for row in sheet.iter_rows(values_only=True):
                parts.append(" ".join("" if value is None else str(value) for value in row))
    if data.startswith(b"%PDF"):
        # NOTE: text drawn in a CID font is stored as glyph ids, which this search does not decode.
        for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
            try:
                parts.append(zlib.decompress(stream).decode("latin-1"))
            except zlib.error:
                parts.append(stream.decode("latin-1"))
    return "\n".join(parts)


def test_no_page_shows_other_order(wechat, app, login):
    secret, arguments = _planted(wechat)
    urls, unfilled = _checked_urls(app, arguments)
    assert unfilled == [], "add values for these URL arguments to _planted"
    assert "/reconciliation/" in urls
    assert "/payments/refunds" in urls
    assert len(urls) >= 25

    leaks, errors = [], []
    for username in QD_USERS:
        client = login(username)
        for url in urls:
            response = client.get(url)
            if response.status_code >= 500:
                errors.append((username, url, response.status_code))
            text = _readable_text(response)
            for kind, number in secret.items():
                if number in text:
                    leaks.append((username, url, kind))
    assert leaks == []
    assert errors == []

    # QD's finance page lists the difference with the placeholder.
    reconciliation = login("qd_finance").get("/reconciliation/").get_data(as_text=True)
    assert "另一分公司的订单" in reconciliation


def test_headquarters_sees_other_order(wechat, login):
    secret, _ = _planted(wechat)
    page = login("hq_auditor").get("/hq/reconciliation")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert secret["order"] in html
    assert wechat["demo"]["QD"].name in html
    assert wechat["demo"]["TJ"].name in html

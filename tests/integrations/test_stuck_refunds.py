"""Refunds whose confirmation never arrives are queried from the channel by the beat sweep and settled."""

import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from alipay_helpers import TJ_APP_ID
from app.billing.models import LedgerEntry
from app.extensions import celery, db
from app.org.models import User
from app.payments.models import Payment, Refund
from app.payments.refunds import refundable_amount, request_refund
from app.tasks.payments import query_stuck_refunds_task
from wechatpay_helpers import SUB_MCHIDS, accounts_of, paid_online_order, wait_for

pytestmark = pytest.mark.xdist_group("online-refunds")
D = Decimal



def _payment_of(account, channel, simulator, merchant):
    return db.session.get(Payment, paid_online_order(account, channel, simulator, merchant).payment_id)

def _cashier():
    return db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))


def _refund(refund_id):
    db.session.expire_all()
    return db.session.get(Refund, refund_id)


def _posted(refund_id):
    return sum(line.amount for line in db.session.scalars(sa.select(LedgerEntry).filter_by(cause_type="refund", cause_id=refund_id)))


def test_wechat_lost_confirmation_completed(wechat):
    simulator = wechat["simulator"]
    payment = _payment_of(accounts_of(wechat["demo"]["TJ"], 1)[0], "wechat", simulator, SUB_MCHIDS["TJ"])
    simulator.refund_notifications = False
    refund = request_refund(payment.id, "30.00", "面积核减", _cashier())
    time.sleep(0.3)
    assert _refund(refund.id).status == "processing"
    # A refund younger than the threshold is left to its notification.
    assert query_stuck_refunds_task(older_than_seconds=600) == 0
    assert _refund(refund.id).status == "processing"

    assert query_stuck_refunds_task(older_than_seconds=0) == 1
    settled = _refund(refund.id)
    assert settled.status == "succeeded"
    assert settled.channel_refund_id.startswith("50000")
    assert _posted(refund.id) == D("30.00")
    # Nothing is left to settle, and nothing posts twice.
    assert query_stuck_refunds_task(older_than_seconds=0) == 0
    assert _posted(refund.id) == D("30.00")


def test_wechat_abnormal_refund_failed(wechat, login):
    simulator = wechat["simulator"]
    payment = _payment_of(accounts_of(wechat["demo"]["TJ"], 1)[0], "wechat", simulator, SUB_MCHIDS["TJ"])
    simulator.refund_notifications = False
    simulator.refund_outcome = "ABNORMAL"
    refund = request_refund(payment.id, str(payment.amount), "重复缴费", _cashier())
    assert query_stuck_refunds_task(older_than_seconds=0) == 1
    failed = _refund(refund.id)
    assert failed.status == "failed"
    assert "ABNORMAL" in failed.failure_reason
    assert _posted(refund.id) == 0
    assert refundable_amount(db.session.get(Payment, payment.id)) == payment.amount
    # Stored in Chinese with its msgid by the sweep task; each reader sees their own language.
    assert failed.failure_reason.startswith("退款渠道拒绝：")
    cashier = login("tj_cashier")
    chinese_page = cashier.get(f"/payments/{payment.id}").get_data(as_text=True)
    cashier.post("/language", data={"locale": "en"})
    english_page = cashier.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert "退款渠道拒绝：" in chinese_page
    assert "The refund channel rejected the refund: " in english_page
    assert "退款渠道拒绝" not in english_page


def test_wechat_unsent_refund_sent_again(wechat, app, monkeypatch):
    simulator = wechat["simulator"]
    payment = _payment_of(accounts_of(wechat["demo"]["TJ"], 1)[0], "wechat", simulator, SUB_MCHIDS["TJ"])
    # The channel cannot be reached when the refund is submitted.
    monkeypatch.setitem(app.config, "WECHATPAY_API_BASE", "http://127.0.0.1:9")
    refund = request_refund(payment.id, "12.00", "面积核减", _cashier())
    assert refund.status == "processing"
    assert "提交退款渠道失败" in refund.failure_reason
    monkeypatch.setitem(app.config, "WECHATPAY_API_BASE", simulator.base_url)

    # The query finds no such refund, so the sweep sends it again under the same out_refund_no.
    query_stuck_refunds_task(older_than_seconds=0)
    sent = simulator.orders[(SUB_MCHIDS["TJ"], payment.note.split()[-1])]["refunds"]
    assert list(sent) == [refund.out_refund_no]
    assert wait_for(lambda: _refund(refund.id).status == "succeeded")
    assert _posted(refund.id) == D("12.00")


def test_alipay_lost_reply_completed(alipay_world):
    simulator = alipay_world["simulator"]
    payment = _payment_of(accounts_of(alipay_world["demo"]["TJ"], 1)[0], "alipay", simulator, TJ_APP_ID)
    simulator.lose_refund_replies = True
    simulator.refund_notifications = False
    refund = request_refund(payment.id, "40.00", "面积核减", _cashier())
    assert refund.status == "processing"
    assert "HTTP 504" in refund.failure_reason

    simulator.lose_refund_replies = False
    assert query_stuck_refunds_task(older_than_seconds=0) == 1
    assert _refund(refund.id).status == "succeeded"
    assert _posted(refund.id) == D("40.00")
    order = simulator.orders[(TJ_APP_ID, payment.note.split()[-1])]
    # Alipay refunded once; the sweep only asked.
    assert order["refunds"] == {refund.out_refund_no: D("40.00")}
    assert [c["method"] for c in simulator.calls].count("alipay.trade.refund") == 1


def test_sweeps_on_beat_schedule(app_ctx):
    schedule = celery.conf.beat_schedule
    assert schedule["stuck-refunds"]["task"] == "payments.query_stuck_refunds"
    assert schedule["stuck-refunds"]["kwargs"] == {"older_than_seconds": app_ctx.config["REFUND_QUERY_AFTER_SECONDS"]}
    assert schedule["issue-pending-e-invoices"]["task"] == "invoicing.issue_pending_e_invoices"
    assert schedule["issue-pending-e-invoices"]["schedule"] == app_ctx.config["EINVOICE_SWEEP_S"]
    assert schedule["daily-reconciliation"]["task"] == "payments.reconcile_all"
    # A worker imports the `include` modules at start; do the same so every task is registered.
    celery.loader.import_default_modules()
    for entry in schedule.values():
        assert entry["task"] in celery.tasks, entry["task"]

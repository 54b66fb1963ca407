"""Refunds whose confirmation never arrives are queried from the channel by the beat sweep and settled."""

import time
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from alipay_helpers import TJ_APP_ID
import app.payments.refunds as refunds
from app.billing.invariants import find_invariant_breaks
from app.billing.models import LedgerEntry
from app.clock import LOCAL_TIME, local_time
from app.integrations.statement import StatementLine
from app.extensions import celery, db
from app.org.models import User
from app.payments.models import Payment, Refund
from app.tariffs.models import Season
from app.payments.reconciliation import reconcile
from app.payments.refunds import check_refund, refundable_amount, request_refund
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


DAY = date(2025, 12, 3)


def _assert_no_breaks(company_id):
    season = db.session.scalar(sa.select(Season).filter_by(company_id=company_id, name="2025-2026"))
    assert find_invariant_breaks(company_id, season.id) == []


def _local(day, hour, minute):
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=LOCAL_TIME).astimezone(timezone.utc)


def test_resent_refund_dated_by_accepted_send(wechat, app, monkeypatch):
    # Requested and first sent at 23:58 on DAY, when the channel cannot be reached. The
    # sweep's query at 00:03 the next day finds no refund and sends it again, which the
    # channel accepts, so its bill lists the refund on the next day.
    simulator = wechat["simulator"]
    company = wechat["demo"]["TJ"]
    next_day = DAY + timedelta(days=1)
    payment = _payment_of(accounts_of(company, 1)[0], "wechat", simulator, SUB_MCHIDS["TJ"])
    first_send, second_send = _local(DAY, 23, 58), _local(next_day, 0, 3)
    clock = [first_send]
    monkeypatch.setattr(refunds, "utcnow", lambda: clock[0])
    monkeypatch.setitem(app.config, "WECHATPAY_API_BASE", "http://127.0.0.1:9")
    simulator.refund_notifications = False

    refund = request_refund(payment.id, "12.00", "面积核减", _cashier())
    db.session.execute(sa.update(Refund).where(Refund.id == refund.id).values(requested_at=first_send))
    db.session.commit()
    unsent = _refund(refund.id)
    assert unsent.status == "processing"
    assert local_time(unsent.sent_at) == first_send
    assert unsent.send_accepted is False

    monkeypatch.setitem(app.config, "WECHATPAY_API_BASE", simulator.base_url)
    clock[0] = second_send
    check_refund(refund.id)
    # Without notifications the simulator answers the send with PROCESSING, and the next query completes it.
    if _refund(refund.id).status == "processing":
        check_refund(refund.id)
    sent = _refund(refund.id)
    assert sent.status == "succeeded"
    assert local_time(sent.sent_at) == second_send
    assert sent.send_accepted is True
    assert _posted(refund.id) == D("12.00")
    _assert_no_breaks(company.id)

    merchant = SUB_MCHIDS["TJ"]
    refund_line = StatementLine("wechatpay", merchant, sent.channel_refund_id, None, "refund", D("12.00"), second_send)
    on_next_day = reconcile(company.id, "wechatpay", merchant, next_day, [refund_line])
    assert on_next_day.matched == 1
    assert on_next_day.differences == 0
    assert on_next_day.our_total == D("-12.00")
    on_first_day = reconcile(company.id, "wechatpay", merchant, DAY, [])
    assert on_first_day.differences == 0
    assert on_first_day.our_total == D("0.00")


def test_alipay_lost_reply_completed(alipay_world, monkeypatch):
    simulator = alipay_world["simulator"]
    payment = _payment_of(accounts_of(alipay_world["demo"]["TJ"], 1)[0], "alipay", simulator, TJ_APP_ID)
    simulator.lose_refund_replies = True
    simulator.refund_notifications = False
    first_send = _local(DAY, 23, 58)
    clock = [first_send]
    monkeypatch.setattr(refunds, "utcnow", lambda: clock[0])
    refund = request_refund(payment.id, "40.00", "面积核减", _cashier())
    assert refund.status == "processing"
    assert "HTTP 504" in refund.failure_reason

    # Alipay accepted the send whose reply was lost, so the query after midnight keeps that send's time.
    simulator.lose_refund_replies = False
    clock[0] = _local(DAY + timedelta(days=1), 0, 3)
    check_refund(refund.id)
    completed = _refund(refund.id)
    assert completed.status == "succeeded"
    assert local_time(completed.sent_at) == first_send
    assert completed.send_accepted is True
    assert _posted(refund.id) == D("40.00")
    order = simulator.orders[(TJ_APP_ID, payment.note.split()[-1])]
    # Alipay refunded once; the query only asked.
    assert order["refunds"] == {refund.out_refund_no: D("40.00")}
    assert [c["method"] for c in simulator.calls].count("alipay.trade.refund") == 1
    _assert_no_breaks(payment.company_id)


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

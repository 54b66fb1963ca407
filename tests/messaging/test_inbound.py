"""Inbound consumers on the real RabbitMQ: meter readings applied once by message id even when
the consumer process is killed mid-stream, the review list, poison messages to the DLQ, and
OA decisions completing approval tasks."""

import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.billing.metered import settle_metered
from app.billing.services import season_receivable
from app.clock import LOCAL_TIME
from app.extensions import db
from app.messaging.broker import INBOUND_EXCHANGE, connect, declare_consumer_queue
from app.messaging.inbound import CONSUMERS, MAX_ATTEMPTS, apply_message, run_consumer
from app.messaging.models import MeterReading, MeterReadingReview, ProcessedMessage
from app.network.models import Account
from app.org.models import Role
from app.processes.models import HumanTask, ProcessInstance
from app.tariffs.services import get_season
from tests.messaging.conftest import WAIT_S, drain, publish_inbound
from tests.processes.conftest import open_task, start_request, user

ROOT = Path(__file__).resolve().parents[2]
READINGS_PER_ACCOUNT = 60
FIRST_READ = datetime(2025, 11, 20, 8, 0, tzinfo=LOCAL_TIME)


def _declare(url, name):
    spec = CONSUMERS[name]
    with connect(url) as connection:
        declare_consumer_queue(connection, spec.queue, INBOUND_EXCHANGE, spec.binding_keys)


def _reading(account, number):
    """Reading `number` of an account: hourly, 1000.000 GJ plus 0.5 GJ per hour."""
    return {
        "company": "QD", "account_no": account.account_no, "meter_no": f"M{account.id}",
        "read_at": (FIRST_READ + timedelta(hours=number)).isoformat(), "reading_gj": f"{1000 + Decimal('0.5') * number:.3f}",
    }


def _count(model, **filters):
    count = db.session.scalar(sa.select(sa.func.count(model.id)).filter_by(**filters))
    db.session.rollback()
    return count


def _consumer_process(app, url):
    env = {
        **os.environ, "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"], "HEATFLOW_OUTBOX_BROKER_URL": url,
        "HEATFLOW_CONFIG": "testing",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "wsgi", "heat", "outbox", "consume", "meter_readings", "--idle-exit", "6"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _wait(predicate, seconds=WAIT_S):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_killed_consumer_applies_every_reading_once(app_ctx, metered_qd, broker_url):
    _declare(broker_url, "meter_readings")
    total = len(metered_qd) * READINGS_PER_ACCOUNT
    messages = [
        ("meter.reading.QD", _reading(account, number), f"r-{account.id}-{number}")
        for number in range(READINGS_PER_ACCOUNT) for account in metered_qd
    ]
    # The metering system sends 20 readings a second time under the same ids.
    publish_inbound(broker_url, messages + messages[:20])

    first = _consumer_process(app_ctx, broker_url)
    try:
        assert _wait(lambda: _count(ProcessedMessage) >= 60), "the consumer applied too little before the kill"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    applied_at_kill = _count(ProcessedMessage)
    assert 60 <= applied_at_kill < total

    second = _consumer_process(app_ctx, broker_url)
    try:
        assert second.wait(timeout=WAIT_S * 2) == 0
    finally:
        if second.poll() is None:
            second.kill()

    assert _count(MeterReading) == total
    assert _count(ProcessedMessage, outcome="applied") == total
    assert _count(MeterReadingReview) == 0
    assert len(set(db.session.scalars(sa.select(MeterReading.message_id)))) == total
    assert drain(broker_url, "heatflow.meter_readings.dlq", timeout=0.5) == []

    # Heat used = last − first reading = 59 × 0.5 = 29.5 GJ. Settlement at QD's tariff:
    # 69.1275 m² × 9.00 + 29.5 × 41.73 = 622.1475 + 1231.035 = 1853.1825 → 1853.18;
    # 1853.18 − 2101.48 billed = −248.30 credited.
    account = metered_qd[0]
    season = get_season(account.company_id, "2025-2026")
    line = settle_metered(db.session.get(Account, account.id), season)
    db.session.commit()
    assert line.amount == Decimal("-248.30")
    assert season_receivable(account.id, season.id) == Decimal("1853.18")


def test_readings_that_cannot_apply_go_to_the_review_list(metered_qd, add_account):
    spec = CONSUMERS["meter_readings"]
    account = metered_qd[0]
    area_account = add_account("QD", "80")
    assert apply_message(spec, "a1", _reading(account, 10)) == "applied"
    assert apply_message(spec, "a1", _reading(account, 10)) == "duplicate"

    lower = {**_reading(account, 11), "reading_gj": "1004.999"}
    missing = {**_reading(account, 12), "reading_gj": ""}
    not_metered = {**_reading(area_account, 1)}
    unknown = {**_reading(account, 13), "account_no": "129999999999999"}
    too_fine = {**_reading(account, 14), "reading_gj": "1007.0001"}
    earlier_higher = {**_reading(account, 9), "reading_gj": "1005.001"}
    for message_id, body in (("b1", lower), ("b2", missing), ("b3", not_metered), ("b4", unknown), ("b5", too_fine),
                             ("b6", earlier_higher)):
        assert apply_message(spec, message_id, body) == "rejected", message_id

    reasons = dict(db.session.execute(sa.select(MeterReadingReview.message_id, MeterReadingReview.reason)).all())
    # Reading 10 is 1000 + 5.0 = 1005.000 GJ at 2025-11-20 18:00.
    assert reasons["b1"].startswith("读数 1004.999 小于 2025-11-20 18:00 的读数 1005.000（读数倒退）")
    assert reasons["b2"].startswith("读数缺失")
    assert reasons["b3"].startswith(f"用户 {area_account.account_no} 按面积计费")
    assert reasons["b4"].startswith("用户编号「129999999999999」在 QD 不存在")
    assert "超过三位小数" in reasons["b5"]
    assert reasons["b6"].startswith("读数 1005.001 大于其后 2025-11-20 18:00 的读数 1005.000")
    assert all(reason.endswith("请核对计量系统中的读数后重新发送。") for reason in reasons.values())
    assert _count(MeterReading) == 1
    assert _count(ProcessedMessage, outcome="rejected") == 6


def test_out_of_range_readings_reviewed(metered_qd):
    spec = CONSUMERS["meter_readings"]
    account = metered_qd[0]
    cases = {
        "huge": ({**_reading(account, 1), "reading_gj": "1e20"}, "读数「1e20」超过上限"),
        "beyond_precision": ({**_reading(account, 2), "reading_gj": "1e30"}, "读数「1e30」超过上限"),
        "year_9999": ({**_reading(account, 3), "read_at": "9999-12-31T23:59:59-10:00"}, "抄表时间「9999-12-31T23:59:59-10:00」超出范围"),
        "year_1": ({**_reading(account, 4), "read_at": "0001-01-01T00:00:00+08:00"}, "抄表时间「0001-01-01T00:00:00+08:00」超出范围"),
    }

    outcomes = {message_id: apply_message(spec, message_id, body) for message_id, (body, _reason) in cases.items()}

    assert outcomes == {message_id: "rejected" for message_id in cases}
    reasons = dict(db.session.execute(sa.select(MeterReadingReview.message_id, MeterReadingReview.reason)).all())
    for message_id, (_body, reason) in cases.items():
        assert reasons[message_id].startswith(reason), reasons[message_id]
    assert _count(MeterReading) == 0


def test_poison_messages_reach_the_dead_letter_queue(metered_qd, broker_url):
    _declare(broker_url, "meter_readings")
    account = metered_qd[0]
    publish_inbound(broker_url, [
        ("meter.reading.QD", b"{not json", "p-json"),
        ("meter.reading.QD", _reading(account, 1), None),
        ("meter.reading.QD", {**_reading(account, 2), "company": "XX"}, "p-company"),
        ("meter.reading.QD", _reading(account, 3), "good"),
    ])

    handled = run_consumer("meter_readings", broker_url, idle_exit_s=2, max_seconds=WAIT_S)

    # Three poison messages × 5 attempts each, and the good one once.
    assert handled == 3 * MAX_ATTEMPTS + 1
    dead = drain(broker_url, "heatflow.meter_readings.dlq")
    assert sorted(str(m[0]) for m in dead) == ["None", "p-company", "p-json"]
    for message_id, headers, body, key in dead:
        assert headers["x-heatflow-attempts"] == MAX_ATTEMPTS - 1
        assert headers["x-death"][0]["queue"] == "heatflow.meter_readings"
        assert headers["x-death"][0]["reason"] == "rejected"
    assert "unknown company 'XX'" in next(m[1] for m in dead if m[0] == "p-company")["x-heatflow-last-error"]
    assert _count(MeterReading) == 1
    assert _count(ProcessedMessage) == 1


def test_oa_decision_completes_the_waiting_approval(demo, make_account, login, broker_url):
    # TJ residential 87.35 m² × 25.00 = 2183.75; suspended at 0.20: 436.75.
    _declare(broker_url, "oa_approvals")
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = db.session.scalar(sa.select(ProcessInstance).filter_by(account_id=account.id))
    task = open_task(instance.id, "company_approval")
    approver = user("tj_approver")
    decision = {"company": "TJ", "task_id": task.id, "decision": "approve", "comment": "OA 审批同意", "approver_no": approver.user_no}
    publish_inbound(broker_url, [
        ("oa.approval.TJ", decision, "oa-1"),
        ("oa.approval.TJ", decision, "oa-1"),
        ("oa.approval.TJ", {**decision, "comment": "又一次"}, "oa-2"),
        ("oa.approval.TJ", {**decision, "approver_no": "999999"}, "oa-3"),
    ])

    assert run_consumer("oa_approvals", broker_url, idle_exit_s=2, max_seconds=WAIT_S) == 4

    db.session.expire_all()
    done = db.session.get(HumanTask, task.id)
    assert done.status == "completed"
    assert done.decision == "approve"
    assert done.comment == "OA 审批同意"
    assert done.completed_by_id == approver.id
    season = get_season(account.company_id, "2025-2026")
    assert season_receivable(account.id, season.id) == Decimal("436.75")
    assert open_task(instance.id, "valve_close") is not None
    outcomes = dict(db.session.execute(sa.select(ProcessedMessage.message_id, ProcessedMessage.outcome)).all())
    assert outcomes == {"oa-1": "applied", "oa-2": "rejected", "oa-3": "rejected"}
    reasons = dict(db.session.execute(sa.select(ProcessedMessage.message_id, ProcessedMessage.reason)).all())
    assert "已办结" in reasons["oa-2"]
    assert reasons["oa-3"] == "审批人工号「999999」不存在或已停用"

    # A decision cannot complete the field task, whose form needs the valve result: it is
    # rejected, and the task goes back to the inbox unclaimed.
    valve_task = open_task(instance.id, "valve_close")
    field = user("tj_field")
    publish_inbound(broker_url, [
        ("oa.approval.TJ", {**decision, "task_id": valve_task.id, "approver_no": field.user_no}, "oa-4"),
    ])
    assert run_consumer("oa_approvals", broker_url, idle_exit_s=2, max_seconds=WAIT_S) == 1
    db.session.expire_all()
    outcome = db.session.scalar(sa.select(ProcessedMessage).filter_by(message_id="oa-4"))
    assert outcome.outcome == "rejected"
    released = db.session.get(HumanTask, valve_task.id)
    assert released.status == "open"
    assert released.claimed_by_id is None


def test_oa_decision_bad_approver_rejected(demo, make_account, login):
    spec = CONSUMERS["oa_approvals"]
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = db.session.scalar(sa.select(ProcessInstance).filter_by(account_id=account.id))
    task = open_task(instance.id, "company_approval")
    base = {"company": "TJ", "task_id": task.id, "decision": "approve", "approver_no": user("tj_approver").user_no}

    wrong_role = apply_message(spec, "oa-role", {**base, "approver_no": user("tj_clerk").user_no})
    huge_task = apply_message(spec, "oa-huge", {**base, "task_id": 10**23})

    assert wrong_role == "rejected"
    assert huge_task == "rejected"
    reasons = dict(db.session.execute(sa.select(ProcessedMessage.message_id, ProcessedMessage.reason)).all())
    # The reason names the lane's role as the company calls it.
    role_name = db.session.scalar(sa.select(Role.name).filter_by(company_id=account.company_id, code="company_approver"))
    assert f"「{role_name}」" in reasons["oa-role"]
    assert "不是任务编号" in reasons["oa-huge"]
    db.session.expire_all()
    waiting = db.session.get(HumanTask, task.id)
    assert waiting.status == "open"
    assert waiting.claimed_by_id is None


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("comment", {"a": 1}, "object"),
        ("comment", ["同意"], "array"),
        ("comment", 5, "number"),
        ("decision", ["approve"], "array"),
        ("decision", True, "boolean"),
        ("approver_no", 100023, "number"),
        ("approver_no", {"no": "100023"}, "object"),
    ],
)
def test_oa_decision_wrong_json_type_rejected(demo, make_account, login, field, value, shown):
    spec = CONSUMERS["oa_approvals"]
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = db.session.scalar(sa.select(ProcessInstance).filter_by(account_id=account.id))
    task = open_task(instance.id, "company_approval")
    base = {"company": "TJ", "task_id": task.id, "decision": "reject", "comment": "材料不全", "approver_no": user("tj_approver").user_no}

    outcome = apply_message(spec, "oa-type", {**base, field: value})

    assert outcome == "rejected"
    reason = db.session.scalar(sa.select(ProcessedMessage.reason).filter_by(message_id="oa-type"))
    assert f"字段 {field} 应为字符串" in reason
    assert shown in reason
    db.session.expire_all()
    waiting = db.session.get(HumanTask, task.id)
    assert waiting.status == "open"
    assert waiting.claimed_by_id is None


def test_oa_decision_null_comment_applied(demo, make_account, login):
    spec = CONSUMERS["oa_approvals"]
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = db.session.scalar(sa.select(ProcessInstance).filter_by(account_id=account.id))
    task = open_task(instance.id, "company_approval")
    message = {"company": "TJ", "task_id": task.id, "decision": "approve", "comment": None, "approver_no": user("tj_approver").user_no}

    assert apply_message(spec, "oa-null", message) == "applied"
    db.session.expire_all()
    assert db.session.get(HumanTask, task.id).status == "completed"

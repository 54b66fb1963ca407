"""The 强停 process end to end: notice, escalation of a low-income household, field task, rejection and auto-cancel."""

from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import season_receivable
from app.extensions import db
from app.network.models import Account
from app.network.valves import ValveChange
from app.payments.services import collect_payment
from app.processes.models import HumanTask, ProcessEvent
from app.tariffs.services import get_season
from tests.processes.conftest import SEASON, fire_timer_of, flashed, instance_of, open_task, start_process_request, submit_task, user

NOTICE = {"notice_no": "TJ-CJ-2026-007", "served_on": "2026-01-05", "comment": "本人签收"}


def _receivable(account):
    return season_receivable(account.id, get_season(account.company_id, SEASON).id)


def _start_and_serve_notice(login, account):
    clerk = login("tj_clerk")
    response = start_process_request(clerk, "forced_shutoff", account.id, {"comment": "多次催缴未缴"})
    assert response.status_code == 302
    instance = instance_of(account.id, "forced_shutoff")
    assert submit_task(clerk, open_task(instance.id, "notice").id, NOTICE).status_code == 302
    assert fire_timer_of(instance.id, "wait_after_notice").status == "fired"
    return instance


def test_low_income_shutoff_escalates(demo, make_account, login):
    # TJ low-income households pay the residential price: 87.35 × 25.00 = 2183.75, all unpaid.
    account = make_account("TJ", "87.35", user_type="low_income")
    instance = _start_and_serve_notice(login, account)
    company_task = open_task(instance.id, "company_approval")
    approver = login("tj_approver")
    approver.post(f"/processes/tasks/{company_task.id}/claim")
    page = approver.get(f"/processes/tasks/{company_task.id}").get_data(as_text=True)
    assert "TJ-CJ-2026-007" in page
    assert "强停后应收（不减少）" in page
    submit_task(approver, company_task.id, {"decision": "approve", "comment": "同意强停"})

    group_task = open_task(instance.id, "group_approval")
    assert group_task is not None
    escalated = db.session.scalar(
        sa.select(ProcessEvent.comment).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "escalated")
    )
    assert escalated == "低保户强停需集团审批。"
    submit_task(login("hq_approver"), group_task.id, {"decision": "approve", "comment": "集团同意"})
    db.session.expire_all()
    assert db.session.get(Account, account.id).billing_status == "normal"

    field_task = open_task(instance.id, "valve_close")
    assert db.session.scalar(sa.select(sa.func.count(HumanTask.id)).where(HumanTask.task_spec_name == "valve_close")) == 1
    response = submit_task(login("tj_field"), field_task.id, {"result": "sealed", "seal_no": "QT-0001", "photo_note": "照片 3 张"})
    assert response.status_code == 302, response.get_data(as_text=True)

    db.session.expire_all()
    stored = db.session.get(Account, account.id)
    assert stored.billing_status == "forced_off"
    assert stored.valve_state == "sealed"
    changes = db.session.scalars(sa.select(ValveChange).where(ValveChange.account_id == account.id)).all()
    assert [(c.state, c.cause_type, c.cause_id) for c in changes] == [("sealed", "field_task", field_task.id)]
    assert instance_of(account.id, "forced_shutoff").status == "completed"
    assert _receivable(account) == Decimal("2183.75")
    kinds = db.session.scalars(sa.select(LedgerEntry.kind).where(LedgerEntry.account_id == account.id)).all()
    assert kinds == ["charge"]


def test_shutoff_rejection_changes_nothing(demo, make_account, login):
    account = make_account("TJ", "87.35")
    instance = _start_and_serve_notice(login, account)
    response = submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id,
                           {"decision": "reject", "comment": "用户承诺月底缴清"})
    assert response.status_code == 302
    db.session.expire_all()
    assert instance_of(account.id, "forced_shutoff").status == "rejected"
    stored = db.session.get(Account, account.id)
    assert (stored.billing_status, stored.valve_state) == ("normal", "open")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ValveChange)) == 0
    assert _receivable(account) == Decimal("2183.75")


def test_shutoff_cancelled_when_paid_before_field_task(demo, make_account, login):
    account = make_account("TJ", "87.35")
    instance = _start_and_serve_notice(login, account)
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    field_task = open_task(instance.id, "valve_close")
    field = login("tj_field")
    assert field.post(f"/processes/tasks/{field_task.id}/claim").status_code == 303

    collect_payment(db.session.get(Account, account.id), "2183.75", "cash", user("tj_cashier"))
    response = field.post(f"/processes/tasks/{field_task.id}", data={"result": "sealed", "seal_no": "QT-0002"})
    assert response.status_code == 409
    assert "该户欠费已结清，强停流程已自动取消" in response.get_data(as_text=True)

    db.session.expire_all()
    assert instance_of(account.id, "forced_shutoff").status == "cancelled"
    assert db.session.get(HumanTask, field_task.id).status == "cancelled"
    stored = db.session.get(Account, account.id)
    assert (stored.billing_status, stored.valve_state) == ("normal", "open")
    assert _receivable(account) == Decimal("2183.75")
    cancelled = db.session.scalar(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "cancelled")
    )
    assert cancelled.task_name == "关栓施封"


def test_shutoff_cancelled_when_paid_before_notice(demo, make_account, login):
    account = make_account("TJ", "87.35")
    clerk = login("tj_clerk")
    start_process_request(clerk, "forced_shutoff", account.id, {"comment": ""})
    instance = instance_of(account.id, "forced_shutoff")
    collect_payment(db.session.get(Account, account.id), "2183.75", "cash", user("tj_cashier"))
    response = clerk.post(f"/processes/tasks/{open_task(instance.id, 'notice').id}/claim", follow_redirects=True)
    assert "强停流程已自动取消" in response.get_data(as_text=True)
    db.session.expire_all()
    assert instance_of(account.id, "forced_shutoff").status == "cancelled"


def test_shutoff_requires_arrears(demo, make_account, login):
    account = make_account("TJ", "87.35")
    collect_payment(account, "2183.75", "cash", user("tj_cashier"))
    clerk = login("tj_clerk")
    response = start_process_request(clerk, "forced_shutoff", account.id, {"comment": ""})
    assert "该户没有欠费，不能申请强停" in flashed(clerk, response)
    assert instance_of(account.id, "forced_shutoff") is None

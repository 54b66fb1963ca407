"""The 报停 process end to end through the web routes: escalation, re-billing, field task and history."""

from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import season_receivable
from app.extensions import db
from app.network.models import Account
from app.processes.audit import verify_chain
from app.processes.models import HumanTask, ProcessEvent, ProcessInstance
from app.tariffs.services import get_season
from tests.processes.conftest import SEASON, flashed, open_task, start_request, submit_task


def _instance_for(account_id):
    return db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == account_id))


def _receivable(account):
    return season_receivable(account.id, get_season(account.company_id, SEASON).id)


def _inbox_ids(client):
    text = client.get("/processes/inbox").get_data(as_text=True)
    return text


def test_non_residential_goes_to_group_and_rebills(demo, make_account, login):
    # TJ non-residential: 547.07 m² × 40.00 = 21882.80; suspended at ratio 0.20: 4376.56.
    account = make_account("TJ", "547.07", user_type="non_residential")
    assert _receivable(account) == Decimal("21882.80")
    clerk, approver, group, field = login("tj_clerk"), login("tj_approver"), login("hq_approver"), login("tj_field")

    assert start_request(clerk, account.id).status_code == 302
    instance = _instance_for(account.id)
    assert instance.status == "running"
    company_task = open_task(instance.id, "company_approval")
    assert f'data-task-id="{company_task.id}"' in _inbox_ids(approver)
    assert f'data-task-id="{company_task.id}"' not in _inbox_ids(group)

    response = submit_task(approver, company_task.id, {"decision": "approve", "comment": "材料齐全，同意报停"})
    assert response.status_code == 302, response.get_data(as_text=True)
    group_task = open_task(instance.id, "group_approval")
    assert group_task is not None
    assert group_task.lane_role == "group_approver"
    assert f'data-task-id="{group_task.id}"' in _inbox_ids(group)
    assert f'data-task-id="{group_task.id}"' not in _inbox_ids(approver)
    assert _receivable(account) == Decimal("21882.80")

    task_page = group.get(f"/processes/tasks/{group_task.id}").get_data(as_text=True)
    assert "非居民用户报停需集团审批" in task_page
    assert "4376.56" in task_page

    response = submit_task(group, group_task.id, {"decision": "approve", "comment": "集团同意"})
    assert response.status_code == 302, response.get_data(as_text=True)
    db.session.expire_all()
    assert _receivable(account) == Decimal("4376.56")
    line = db.session.scalar(sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "rerate"))
    assert line.amount == Decimal("-17506.24")
    assert line.cause_type == "process_instance"
    assert line.cause_id == instance.id
    assert line.idempotency_key == f"suspension:{instance.id}"
    assert db.session.get(Account, account.id).billing_status == "suspended"

    field_task = open_task(instance.id, "valve_close")
    assert f'data-task-id="{field_task.id}"' in _inbox_ids(field)
    response = submit_task(field, field_task.id, {"result": "sealed", "seal_no": "TJ-2025-0001", "comment": "用户在场"})
    assert response.status_code == 302, response.get_data(as_text=True)

    db.session.expire_all()
    assert db.session.get(ProcessInstance, instance.id).status == "completed"
    assert db.session.get(Account, account.id).valve_state == "sealed"
    events = db.session.scalars(sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id).order_by(ProcessEvent.seq)).all()
    steps = [(e.event_type, e.actor_name, e.task_name, e.decision, e.comment) for e in events]
    assert ("started", "津南热力营业员", "报停申请", None, "房屋空置，冬季无人居住") in steps
    assert ("escalated", "系统", "判断是否需集团审批", None, "非居民用户报停需集团审批；建筑面积 547.07 ㎡ 超过 200 ㎡，需集团审批。") in steps
    assert ("completed", "津南热力分公司审批人", "分公司审批", "approve", "材料齐全，同意报停") in steps
    assert ("completed", "北方热力集团审批人", "集团审批", "approve", "集团同意") in steps
    assert ("completed", "津南热力外勤人员", "关栓", None, "用户在场") in steps
    assert [e.event_type for e in events].count("claimed") == 3
    rebilled = next(e for e in events if e.event_type == "rebilled")
    assert rebilled.data["amount"] == "-17506.24"
    assert rebilled.actor_name == "北方热力集团审批人"
    assert next(e for e in events if e.event_type == "valve_closed").data["seal_no"] == "TJ-2025-0001"
    assert events[-1].event_type == "finished"
    assert verify_chain(instance.id).ok

    page = clerk.get(f"/accounts/{account.id}").get_data(as_text=True)
    for text in ("材料齐全，同意报停", "集团同意", "北方热力集团审批人", "TJ-2025-0001", "已完成"):
        assert text in page
    instance_page = clerk.get(f"/processes/instances/{instance.id}").get_data(as_text=True)
    assert "审计链校验通过" in instance_page


def test_residential_under_threshold_decided_by_company(demo, make_account, login):
    # TJ residential: 87.35 m² × 25.00 = 2183.75; suspended at 0.20: 436.75.
    account = make_account("TJ", "87.35")
    assert _receivable(account) == Decimal("2183.75")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = _instance_for(account.id)

    response = submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve", "comment": ""})
    assert response.status_code == 302, response.get_data(as_text=True)

    db.session.expire_all()
    group_tasks = db.session.scalar(sa.select(sa.func.count(HumanTask.id)).where(HumanTask.task_spec_name == "group_approval"))
    assert group_tasks == 0
    assert _receivable(account) == Decimal("436.75")
    line = db.session.scalar(sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "rerate"))
    assert line.amount == Decimal("-1747.00")
    assert open_task(instance.id, "valve_close") is not None
    event_types = db.session.scalars(sa.select(ProcessEvent.event_type).where(ProcessEvent.instance_id == instance.id))
    assert "escalated" not in set(event_types)


def test_field_task_shows_decision_label(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = _instance_for(account.id)
    response = submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve", "comment": "同意报停"})
    assert response.status_code == 302, response.get_data(as_text=True)
    field_task = open_task(instance.id, "valve_close")
    field = login("tj_field")

    page = field.get(f"/field/tasks/{field_task.id}").get_data(as_text=True)
    assert "<dt>分公司意见</dt><dd>同意</dd>" in page
    assert "<dd>approve</dd>" not in page

    assert field.post("/language", data={"locale": "en"}).status_code in (302, 303)
    page = field.get(f"/field/tasks/{field_task.id}").get_data(as_text=True)
    assert "<dd>Approve</dd>" in page
    assert "<dd>approve</dd>" not in page


def test_history_system_actor_english(demo, make_account, login):
    account = make_account("TJ", "87.35")
    clerk = login("tj_clerk")
    assert start_request(clerk, account.id).status_code == 302
    instance = _instance_for(account.id)

    page = clerk.get(f"/processes/instances/{instance.id}").get_data(as_text=True)
    assert '<td data-label="办理人">系统</td>' in page

    assert clerk.post("/language", data={"locale": "en"}).status_code in (302, 303)
    page = clerk.get(f"/processes/instances/{instance.id}").get_data(as_text=True)
    assert '<td data-label="Handled by">System</td>' in page
    assert ">系统</td>" not in page
    # The stored name, which the audit hash covers, stays as written.
    assert verify_chain(instance.id).ok


def test_residential_above_threshold_escalates(demo, make_account, login):
    account = make_account("TJ", "250.50")
    start_request(login("tj_clerk"), account.id)
    instance = _instance_for(account.id)
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    assert open_task(instance.id, "group_approval") is not None
    escalated = db.session.scalar(sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "escalated"))
    assert escalated.comment == "建筑面积 250.5 ㎡ 超过 200 ㎡，需集团审批。"


def test_rejection_leaves_receivable_unchanged(demo, make_account, login):
    account = make_account("TJ", "87.35")
    clerk, approver = login("tj_clerk"), login("tj_approver")
    start_request(clerk, account.id)
    instance = _instance_for(account.id)
    task = open_task(instance.id, "company_approval")

    response = submit_task(approver, task.id, {"decision": "reject", "comment": ""})
    assert response.status_code == 400
    assert "驳回时必须填写意见" in response.get_data(as_text=True)
    for comment in ("\u200b", "\ufeff\xa0", "\u3000\u200b\n"):
        response = submit_task(approver, task.id, {"decision": "reject", "comment": comment})
        assert response.status_code == 400
        assert "驳回时必须填写意见" in response.get_data(as_text=True)
    assert open_task(instance.id, "company_approval") is not None

    response = approver.post(f"/processes/tasks/{task.id}", data={"decision": "reject", "comment": "用户仍在居住，不符合报停条件"})
    assert response.status_code == 302, response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(ProcessInstance, instance.id).status == "rejected"
    assert _receivable(account) == Decimal("2183.75")
    assert db.session.get(Account, account.id).billing_status == "normal"
    rerate_lines = db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).where(LedgerEntry.kind == "rerate"))
    assert rerate_lines == 0
    assert db.session.scalar(sa.select(sa.func.count(HumanTask.id)).where(HumanTask.status == "open")) == 0
    assert "用户仍在居住，不符合报停条件" in clerk.get(f"/accounts/{account.id}").get_data(as_text=True)

    assert start_request(clerk, account.id).status_code == 302
    assert db.session.scalar(sa.select(sa.func.count(ProcessInstance.id)).where(ProcessInstance.status == "running")) == 1


def test_start_rejects_duplicate_and_non_normal(demo, make_account, login):
    clerk = login("tj_clerk")
    account = make_account("TJ", "87.35")
    start_request(clerk, account.id)
    response = start_request(clerk, account.id)
    assert response.status_code == 409
    assert "该户已有办理中的报停申请" in flashed(clerk, response)

    suspended = make_account("TJ", "60.00", status="suspended")
    response = start_request(clerk, suspended.id)
    assert "只有「正常」状态的用户可以申请报停" in flashed(clerk, response)
    assert db.session.scalar(sa.select(sa.func.count(ProcessInstance.id))) == 1

    response = start_request(clerk, make_account("TJ", "70.00").id, reason="other", comment="")
    assert response.status_code == 400
    assert "原因为「其他」时必须填写说明" in flashed(clerk, response)
    response = start_request(clerk, make_account("TJ", "70.00").id, reason="other", comment="\u200b\u3000")
    assert "原因为「其他」时必须填写说明" in flashed(clerk, response)
    response = start_request(clerk, make_account("TJ", "70.00").id, reason="   ")
    assert "请选择报停原因" in flashed(clerk, response)
    response = start_request(clerk, make_account("TJ", "70.00").id, reason="\ufeff")
    assert "请选择报停原因" in flashed(clerk, response)
    response = start_request(clerk, make_account("TJ", "70.00").id, reason="空" * 101)
    assert "报停原因共 101 字，超过 100 字上限" in flashed(clerk, response)
    assert db.session.scalar(sa.select(sa.func.count(ProcessInstance.id))) == 1


def test_start_accepts_free_text_reason(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id, reason="出租空置", comment="").status_code == 302
    started = db.session.scalar(sa.select(ProcessEvent).where(ProcessEvent.event_type == "started"))
    assert started.data["reason_label"] == "出租空置"
    assert "原因：出租空置" in login("tj_clerk").get(f"/accounts/{account.id}").get_data(as_text=True)


def test_field_task_requires_seal_number(demo, make_account, login):
    account = make_account("TJ", "87.35")
    start_request(login("tj_clerk"), account.id)
    instance = _instance_for(account.id)
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    field = login("tj_field")
    task = open_task(instance.id, "valve_close")

    response = submit_task(field, task.id, {"result": "closed", "seal_no": ""})
    assert response.status_code == 400
    assert "请填写封签号" in response.get_data(as_text=True)
    response = field.post(f"/processes/tasks/{task.id}", data={"result": "closed", "seal_no": "封签 1"})
    assert response.status_code == 400
    assert "只能包含字母、数字和连字符" in response.get_data(as_text=True)
    response = field.post(f"/processes/tasks/{task.id}", data={"result": "opened", "seal_no": "A1"})
    assert response.status_code == 400
    assert "请选择现场结果" in response.get_data(as_text=True)
    assert db.session.get(Account, account.id).valve_state == "open"

"""Tenant isolation for every process type, and the escalation settings page."""

from decimal import Decimal

import sqlalchemy as sa

from app.extensions import db
from app.processes.escalation import rule_for
from app.processes.models import HumanTask, ProcessInstance
from tests.processes.conftest import instance_of, start_process_request

# A valid start form per process type, and the billing status the account needs.
START_FORMS = {
    "suspension": ("normal", {"reason": "vacant"}),
    "waiver": ("normal", {"category": "hardship", "mode": "amount", "amount": "10.00", "evidence": "证明 1"}),
    "forced_shutoff": ("normal", {"comment": "欠费"}),
    "area_adjustment": ("normal", {"new_area": "80.00", "evidence_kind": "certificate", "certificate_no": "C-1"}),
    "reheating": ("suspended", {"requested_on": "2026-01-20"}),
    "connection": ("not_connected", {"applied_area": "80.00", "contract_no": "RW-1"}),
}


def test_qd_users_cannot_touch_tj_instances(demo, make_account, login):
    tj_clerk = login("tj_clerk")
    qd_users = [login(name) for name in ("qd_clerk", "qd_approver", "qd_field", "qd_finance", "qd_admin")]
    for process_type, (status, form) in START_FORMS.items():
        account = make_account("TJ", "87.35", status=status)
        assert start_process_request(tj_clerk, process_type, account.id, form).status_code == 302
        instance = instance_of(account.id, process_type)
        assert instance is not None, process_type
        task = db.session.scalar(sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open"))
        for client in qd_users:
            assert client.get(f"/processes/tasks/{task.id}").status_code == 404
            assert client.post(f"/processes/tasks/{task.id}/claim").status_code == 404
            assert client.post(f"/processes/tasks/{task.id}", data={"decision": "approve"}).status_code == 404
            assert client.get(f"/processes/instances/{instance.id}").status_code == 404
            assert f'data-task-id="{task.id}"' not in client.get("/processes/inbox").get_data(as_text=True)
        response = qd_users[0].post(f"/processes/{process_type}/start/{account.id}", data=form)
        assert response.status_code == 404, process_type
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count(ProcessInstance.id))) == len(START_FORMS)
    assert db.session.scalar(sa.select(sa.func.count(HumanTask.id)).where(HumanTask.claimed_by_id.is_not(None))) == 0


def test_account_page_offers_types_by_status(demo, make_account, login):
    clerk = login("tj_clerk")
    normal = clerk.get(f"/accounts/{make_account('TJ', '87.35').id}").get_data(as_text=True)
    for form_id in ("suspension-start", "waiver-start", "forced_shutoff-start", "area_adjustment-start"):
        assert f'id="{form_id}"' in normal
    assert 'id="reheating-start"' not in normal
    suspended = clerk.get(f"/accounts/{make_account('TJ', '60.00', status='suspended').id}").get_data(as_text=True)
    assert 'id="reheating-start"' in suspended
    assert 'id="suspension-start"' not in suspended
    assert 'id="waiver-start"' not in login("tj_approver").get(f"/accounts/{make_account('TJ', '70.00').id}").get_data(as_text=True)


def test_status_changing_requests_exclude_each_other(demo, make_account, login):
    clerk = login("tj_clerk")
    account = make_account("TJ", "87.35")
    start_process_request(clerk, "suspension", account.id, {"reason": "vacant"})
    response = start_process_request(clerk, "forced_shutoff", account.id, {"comment": ""})
    assert response.status_code == 409
    assert "该户有办理中的报停申请" in response.get_data(as_text=True)
    assert start_process_request(clerk, "waiver", account.id, START_FORMS["waiver"][1]).status_code == 302
    assert instance_of(account.id, "waiver") is not None
    assert instance_of(account.id, "forced_shutoff") is None


def test_settings_page_edits_company_rules(demo, login):
    tj = demo["TJ"]
    admin = login("tj_admin")
    page = admin.get("/processes/settings")
    assert page.status_code == 200
    assert 'id="rule-waiver"' in page.get_data(as_text=True)

    response = admin.post("/processes/settings", data={
        "process_type": "waiver", "amount_threshold": "500", "percent_threshold": "25.5",
        "policy_categories": ["low_income", "late_fee"], "escalate_low_income": "on",
    })
    assert response.status_code == 303
    db.session.expire_all()
    rule = rule_for(tj.id, "waiver")
    assert rule.amount_threshold == Decimal("500.00")
    assert rule.percent_threshold == Decimal("25.5")
    assert rule.policy_categories == "low_income,late_fee"
    assert rule.escalate_low_income is True
    assert rule.escalate_non_residential is False
    assert rule_for(demo["QD"].id, "waiver").amount_threshold == Decimal("1000.00")

    for data, message in [
        ({"process_type": "waiver", "amount_threshold": "abc"}, "不是有效的数字"),
        ({"process_type": "waiver", "percent_threshold": "101"}, "须在 0 到 100"),
        ({"process_type": "waiver", "policy_categories": ["bribe"]}, "未知类别"),
        ({"process_type": "unknown"}, "未知的业务类型"),
    ]:
        response = admin.post("/processes/settings", data=data)
        assert response.status_code == 400
        assert message in response.get_data(as_text=True)
    db.session.expire_all()
    assert rule_for(tj.id, "waiver").amount_threshold == Decimal("500.00")

    response = admin.post("/processes/settings", data={"process_type": "area_adjustment", "area_decrease_threshold": ""})
    assert response.status_code == 303
    db.session.expire_all()
    assert rule_for(tj.id, "area_adjustment").area_decrease_threshold is None

    for username in ("tj_clerk", "tj_approver", "hq_admin", "hq_approver"):
        assert login(username).post("/processes/settings", data={"process_type": "waiver"}).status_code == 403

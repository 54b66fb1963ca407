"""Migrating running instances to a newer model version, with and without an element mapping."""

import re

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.org.services import AccessError
from app.processes.access import InputError
from app.processes.deployment import BPMN_DIR, deploy_model
from app.processes.migration import migrate_instances, parse_mapping
from app.processes.models import ProcessEvent, ProcessInstance
from tests.processes.conftest import instance_of, open_task, start_request, submit_task, user

SUSPENSION = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")


def _rename_element(text, old, new):
    """Rename one BPMN element id everywhere it is referenced, leaving ids that merely contain it."""
    text = re.sub(rf'(id|sourceRef|targetRef|attachedToRef|bpmnElement)="{old}"', rf'\1="{new}"', text)
    return text.replace(f">{old}<", f">{new}<")


def _running(login, make_account, area="87.35"):
    account = make_account("TJ", area)
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    return instance_of(account.id, "suspension")


def _deploy(company, text):
    model = deploy_model(company.id, "suspension", text)
    db.session.commit()
    return model


def test_migrate_keeps_open_task(demo, make_account, login):
    instance = _running(login, make_account)
    task = open_task(instance.id, "company_approval")
    approver = login("tj_approver")
    assert approver.post(f"/processes/tasks/{task.id}/claim").status_code == 303
    # Version 2 only renames the company approval step.
    v2 = _deploy(demo["TJ"], SUSPENSION.replace('name="分公司审批"', 'name="分公司审核"'))
    assert v2.version == 2
    results = migrate_instances(demo["TJ"].id, "suspension", 1, 2, user("tj_admin"), "审批环节更名")
    assert [(r.instance_id, r.migrated) for r in results] == [(instance.id, True)]
    db.session.expire_all()
    migrated = db.session.get(ProcessInstance, instance.id)
    assert migrated.model_id == v2.id
    # The READY task keeps its engine id, so the inbox row and its claim stay.
    same = open_task(instance.id, "company_approval")
    assert same.id == task.id
    assert same.claimed_by_id == user("tj_approver").id
    event = db.session.scalar(sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "migrated"))
    assert event.data["from_version"] == 1
    assert event.data["to_version"] == 2
    assert event.comment == "审批环节更名"
    # The migrated instance completes on the new version: 87.35 m² in TJ is not escalated.
    response = approver.post(f"/processes/tasks/{task.id}", data={"decision": "approve", "comment": "同意"})
    assert response.status_code == 302
    db.session.expire_all()
    assert open_task(instance.id, "valve_close") is not None


@pytest.mark.parametrize("reason", ["", "\u200b", "\ufeff\u3000"])
def test_migrate_needs_visible_reason(demo, reason):
    with pytest.raises(InputError, match="请填写迁移流程版本的原因"):
        migrate_instances(demo["TJ"].id, "suspension", 1, 2, user("tj_admin"), reason)


def test_migrate_rejects_missing_task(demo, make_account, login):
    instance = _running(login, make_account)
    _deploy(demo["TJ"], _rename_element(SUSPENSION, "company_approval", "company_review"))
    results = migrate_instances(demo["TJ"].id, "suspension", 1, 2, user("tj_admin"), "环节调整")
    assert len(results) == 1
    assert results[0].migrated is False
    assert "company_approval" in results[0].reason
    assert "元素映射" in results[0].reason
    db.session.expire_all()
    assert db.session.get(ProcessInstance, instance.id).model.version == 1
    assert db.session.scalar(sa.select(ProcessEvent).where(ProcessEvent.event_type == "migrated")) is None


def test_migrate_with_mapping(demo, make_account, login):
    instance = _running(login, make_account)
    _deploy(demo["TJ"], _rename_element(SUSPENSION, "company_approval", "company_review"))
    mapping = parse_mapping("company_approval=company_review\n")
    results = migrate_instances(demo["TJ"].id, "suspension", 1, 2, user("tj_admin"), "环节调整", mapping)
    assert results[0].migrated is True, results[0].reason
    db.session.expire_all()
    assert open_task(instance.id, "company_approval") is None
    moved = open_task(instance.id, "company_review")
    assert moved is not None
    approver = login("tj_approver")
    assert submit_task(approver, moved.id, {"decision": "approve", "comment": "同意"}).status_code == 302
    db.session.expire_all()
    assert open_task(instance.id, "valve_close") is not None


def test_migrate_reports_each_instance(demo, make_account, login):
    first = _running(login, make_account)
    second = _running(login, make_account)
    # The second request is already at the field task, which version 2 lacks.
    approver = login("tj_approver")
    assert submit_task(approver, open_task(second.id, "company_approval").id, {"decision": "approve", "comment": "同意"}).status_code == 302
    _deploy(demo["TJ"], _rename_element(SUSPENSION, "valve_close", "valve_close_v2"))
    results = {r.instance_id: r for r in migrate_instances(demo["TJ"].id, "suspension", 1, 2, user("tj_admin"), "外勤环节调整")}
    assert results[first.id].migrated is True
    assert results[second.id].migrated is False
    assert "valve_close" in results[second.id].reason


def test_migrate_checks_input(demo, make_account, login):
    _running(login, make_account)
    with pytest.raises(AccessError):
        migrate_instances(demo["TJ"].id, "suspension", 1, 2, user("tj_clerk"), "x")
    with pytest.raises(InputError):
        migrate_instances(demo["TJ"].id, "suspension", 1, 2, user("tj_admin"), "  ")
    with pytest.raises(InputError, match="版本 2"):
        migrate_instances(demo["TJ"].id, "suspension", 1, 2, user("tj_admin"), "没有新版本")
    with pytest.raises(InputError, match="第 1 行"):
        parse_mapping("company_approval")


@pytest.mark.parametrize("from_version, to_version, named", [
    ("²", "2", "²"),
    ("99999999999999999999999", "2", "9999999999"),
    ("1", "99999999999999999999999", "9999999999"),
])
def test_migrate_form_names_bad_version(demo, login, from_version, to_version, named):
    response = login("tj_admin").post("/processes/migrate", data={
        "process_type": "suspension", "from_version": from_version, "to_version": to_version, "reason": "升级", "mapping": "",
    })

    assert response.status_code == 400
    assert f"版本号「{named}」无效" in response.get_data(as_text=True)

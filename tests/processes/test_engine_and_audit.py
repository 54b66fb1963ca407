"""Deployment and versions, the serializer with Decimal data, service failures and the audit hash chain."""

import json
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa
from SpiffWorkflow.util.task import TaskState

from app.billing.models import LedgerEntry
from app.demo import install_demo
from app.extensions import db
from app.network.models import Account
from app.processes.audit import record_event, verify_chain
from app.processes.deployment import BPMN_DIR, deploy_model, latest_model, spec_for
from app.processes.engine import (
    SERIALIZER, ModelValidationError, ProcessRunError, RunContext, SandboxScriptEngine, dump_workflow, load_workflow, new_workflow,
    spec_document, validate_model,
)
from app.processes.models import PROCESS_TYPES, EscalationRule, HumanTask, ProcessEvent, ProcessInstance, ProcessModel, ProcessSpec
from tests.processes.conftest import open_task, start_request, submit_task

SUSPENSION_XML = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")


def _finding_for(xml, element_id):
    with pytest.raises(ModelValidationError) as caught:
        validate_model(xml, "suspension")
    matches = [f for f in caught.value.findings if f.element_id == element_id]
    assert matches, f"no finding for {element_id}: {caught.value}"
    return matches[0].reason


def test_shipped_diagram_validates():
    spec, _ = validate_model(SUSPENSION_XML, "suspension")
    lanes = {task.lane for task in spec.task_specs.values() if getattr(task, "lane", None)}
    assert lanes == {"clerk", "company_approver", "group_approver", "field_staff"}


def test_deploy_rejects_unknown_operator_bad_condition_and_lane():
    unknown = SUSPENSION_XML.replace('serviceTaskOperator id="rebill_suspension"', 'serviceTaskOperator id="drop_tables"')
    assert "服务「drop_tables」未注册" in _finding_for(unknown, "rebill_suspension_task")
    attack = SUSPENSION_XML.replace("group_decision == 'approve'", "__import__('os').system('true')")
    assert "条件「__import__('os').system('true')」未通过表达式检查" in _finding_for(attack, "group_decision_gateway")
    lane = SUSPENSION_XML.replace('name="field_staff"', 'name="plumber"')
    assert "泳道「plumber」不是流程角色" in _finding_for(lane, "valve_close")
    with pytest.raises(ModelValidationError, match="没有 id 为「waiver」的可执行流程"):
        validate_model(SUSPENSION_XML, "waiver")
    with pytest.raises(ModelValidationError, match="不是格式正确的 XML"):
        validate_model("<bpmn:definitions", "suspension")


def test_demo_deploys_version_one_idempotently(demo):
    install_demo()
    models = db.session.scalars(sa.select(ProcessModel)).all()
    assert sorted(m.company_id for m in models) == sorted(c.id for c in demo.values() for _ in PROCESS_TYPES)
    assert {(m.version, m.status) for m in models} == {(1, "published")}
    assert {m.process_type for m in models} == set(PROCESS_TYPES)
    rules = db.session.scalars(sa.select(EscalationRule)).all()
    assert len(rules) == 4 * len(PROCESS_TYPES)
    suspension_rules = [r for r in rules if r.process_type == "suspension"]
    assert {(r.escalate_non_residential, r.area_threshold) for r in suspension_rules} == {(True, Decimal("200.0000"))}
    waiver_rules = [r for r in rules if r.process_type == "waiver"]
    assert {(r.amount_threshold, r.percent_threshold) for r in waiver_rules} == {(Decimal("1000.00"), Decimal("30.000000"))}


def test_running_instance_keeps_its_version(demo, make_account, login):
    tj = demo["TJ"]
    first = make_account("TJ", "87.35")
    start_request(login("tj_clerk"), first.id)
    pinned = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == first.id))

    second_version = deploy_model(tj.id, "suspension", SUSPENSION_XML.replace('name="关栓"', 'name="关栓施封"'))
    db.session.commit()
    assert second_version.version == 2
    assert deploy_model(tj.id, "suspension", second_version.bpmn_xml).id == second_version.id
    assert db.session.get(ProcessModel, pinned.model_id).status == "retired"

    submit_task(login("tj_approver"), open_task(pinned.id, "company_approval").id, {"decision": "approve"})
    assert open_task(pinned.id, "valve_close").title == "关栓"
    later = make_account("TJ", "60.00")
    start_request(login("tj_clerk"), later.id)
    newer = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == later.id))
    assert newer.model_id == second_version.id
    assert db.session.get(ProcessInstance, pinned.id).model.version == 1


def test_deploy_finding_names_type_and_fix():
    lane = SUSPENSION_XML.replace('name="field_staff"', 'name="plumber"')
    with pytest.raises(ModelValidationError) as caught:
        validate_model(lane, "suspension")
    finding = [f for f in caught.value.findings if f.element_id == "valve_close"][0]
    assert finding.tag == "userTask"
    assert str(finding).startswith("valve_close（userTask）：泳道「plumber」不是流程角色")
    assert "请改用以下角色之一" in finding.reason
    assert str(caught.value).startswith("流程图不能部署：")


def test_state_round_trips_with_decimal_and_date(demo):
    spec, subprocess_specs = spec_for(latest_model(demo["TJ"].id, "suspension"))
    start_data = {"account_id": 7, "amount": Decimal("2183.75"), "ratio": Decimal("0.200000"), "filed_on": date(2025, 11, 20)}
    workflow = new_workflow(spec, subprocess_specs, RunContext(None), start_data)
    text = dump_workflow(workflow)
    assert '"2183.75"' in text
    json.loads(text)

    restored = load_workflow(text, RunContext(None))
    assert isinstance(restored.script_engine, SandboxScriptEngine)
    data = restored.get_next_task(state=TaskState.READY).data
    assert data["amount"] == Decimal("2183.75")
    assert isinstance(data["amount"], Decimal)
    assert data["ratio"] == Decimal("0.200000")
    assert data["filed_on"] == date(2025, 11, 20)
    assert dump_workflow(restored) == text


def test_stored_instance_state_keeps_service_outputs(demo, make_account, login):
    account = make_account("TJ", "87.35")
    start_request(login("tj_clerk"), account.id)
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == account.id))
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    db.session.expire_all()
    workflow = load_workflow(db.session.get(ProcessInstance, instance.id).state, RunContext(None))
    data = workflow.get_next_task(state=TaskState.READY, manual=True).data
    assert data["rerate_amount"] == Decimal("-1747.00")
    assert data["receivable_after"] == Decimal("436.75")
    assert data["escalate"] is False
    assert data["company_decision"] == "approve"


def test_state_references_spec_stored_once(demo, make_account, login):
    first, second = make_account("TJ", "87.35"), make_account("TJ", "87.35")
    start_request(login("tj_clerk"), first.id)
    start_request(login("tj_clerk"), second.id)
    states = db.session.scalars(sa.select(ProcessInstance.state).where(ProcessInstance.account_id.in_([first.id, second.id]))).all()
    documents = [json.loads(state) for state in states]
    assert all("spec" not in document for document in documents)
    assert documents[0]["spec_digest"] == documents[1]["spec_digest"]
    stored = db.session.scalars(sa.select(ProcessSpec).where(ProcessSpec.digest == documents[0]["spec_digest"])).all()
    assert len(stored) == 1
    assert stored[0].company_id == demo["TJ"].id
    assert "company_approval" in stored[0].document


def test_loaded_states_reuse_spec_document(demo, make_account, login, monkeypatch):
    account = make_account("TJ", "87.35")
    start_request(login("tj_clerk"), account.id)
    state = db.session.scalar(sa.select(ProcessInstance.state).where(ProcessInstance.account_id == account.id))
    first = load_workflow(state, RunContext(None))
    digest = _stored_spec_digest(first)
    second = load_workflow(state, RunContext(None))
    # Each load gets its own empty subprocess mapping, and the spec must not be serialized again for it.
    assert second.subprocess_specs == {}
    assert second.subprocess_specs is not first.subprocess_specs

    def fail(*args, **kwargs):
        raise AssertionError("the spec was serialized again")

    monkeypatch.setattr(SERIALIZER.registry, "convert", fail)
    assert spec_document(second)[0] == digest


def _stored_spec_digest(workflow):
    return json.loads(dump_workflow(workflow))["spec_digest"]


def test_state_with_embedded_spec_still_loads(demo, make_account, login):
    account = make_account("TJ", "87.35")
    start_request(login("tj_clerk"), account.id)
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == account.id))
    # The form states had before the spec was stored apart: spec and subprocess_specs inline.
    document = json.loads(instance.state)
    digest = document.pop("spec_digest")
    spec_text = db.session.scalar(sa.select(ProcessSpec.document).where(ProcessSpec.digest == digest))
    document.update(json.loads(spec_text))
    instance.state = json.dumps(document)
    db.session.commit()

    assert submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"}).status_code == 302
    db.session.expire_all()
    saved = json.loads(db.session.get(ProcessInstance, instance.id).state)
    assert "spec" not in saved
    assert saved["spec_digest"] == digest
    assert open_task(instance.id, "valve_close") is not None


def test_state_with_unknown_spec_digest_fails_clearly(demo):
    spec, subprocess_specs = spec_for(latest_model(demo["TJ"].id, "suspension"))
    document = json.loads(dump_workflow(new_workflow(spec, subprocess_specs, RunContext(None), {})))
    document["spec_digest"] = "f" * 64
    with pytest.raises(ProcessRunError, match="missing from process_spec"):
        load_workflow(json.dumps(document), RunContext(None))


def test_service_failure_rolls_back_and_is_recorded(demo, make_account, login):
    account = make_account("TJ", "87.35")
    start_request(login("tj_clerk"), account.id)
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == account.id))
    db.session.get(Account, account.id).billing_status = "forced_off"
    db.session.commit()

    task = open_task(instance.id, "company_approval")
    response = submit_task(login("tj_approver"), task.id, {"decision": "approve", "comment": "同意"})
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "rebill_suspension_task" in page
    assert "只有「正常」状态可以报停" in page

    db.session.expire_all()
    assert db.session.get(HumanTask, task.id).status == "open"
    assert db.session.get(ProcessInstance, instance.id).status == "running"
    assert db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).where(LedgerEntry.kind == "rerate")) == 0
    types = list(db.session.scalars(sa.select(ProcessEvent.event_type).where(ProcessEvent.instance_id == instance.id).order_by(ProcessEvent.seq)))
    assert types == ["started", "task_ready", "claimed", "error"]
    assert verify_chain(instance.id).ok


def test_hash_chain_detects_tampering(demo, make_account, login):
    account = make_account("TJ", "87.35")
    clerk = login("tj_clerk")
    start_request(clerk, account.id)
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == account.id))
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "reject", "comment": "材料不全"})
    report = verify_chain(instance.id)
    assert report.ok
    assert report.events == 5

    completed = db.session.scalar(sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "completed"))
    db.session.execute(sa.update(ProcessEvent.__table__).where(ProcessEvent.__table__.c.id == completed.id).values(comment="材料齐全"))
    db.session.commit()
    report = verify_chain(instance.id)
    assert not report.ok
    assert report.bad_seq == completed.seq
    assert "does not match its hash" in report.message
    assert "审计链校验失败" in clerk.get(f"/processes/instances/{instance.id}").get_data(as_text=True)

    db.session.execute(sa.update(ProcessEvent.__table__).where(ProcessEvent.__table__.c.id == completed.id).values(comment="材料不全"))
    db.session.execute(sa.delete(ProcessEvent.__table__).where(ProcessEvent.__table__.c.instance_id == instance.id, ProcessEvent.__table__.c.seq == 2))
    db.session.commit()
    report = verify_chain(instance.id)
    assert report.bad_seq == 3
    assert "entry 2 is missing" in report.message


def test_hash_chain_detects_deleted_newest_events(demo, make_account, login):
    account = make_account("TJ", "87.35")
    start_request(login("tj_clerk"), account.id)
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == account.id))
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "reject", "comment": "材料不全"})
    db.session.refresh(instance)
    assert (instance.audit_seq, verify_chain(instance.id).events) == (5, 5)
    newest = db.session.scalar(sa.select(ProcessEvent.hash).where(ProcessEvent.instance_id == instance.id, ProcessEvent.seq == 5))
    assert instance.audit_hash == newest

    events = ProcessEvent.__table__
    db.session.execute(sa.delete(events).where(events.c.instance_id == instance.id, events.c.seq >= 4))
    db.session.commit()
    report = verify_chain(instance.id)
    assert not report.ok
    assert report.bad_seq == 4
    assert "entries 4 to 5 are missing" in report.message


def test_events_of_a_failed_step_are_not_stored(demo, make_account, login):
    account = make_account("TJ", "87.35")
    start_request(login("tj_clerk"), account.id)
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == account.id))
    db.session.refresh(instance)
    head = (instance.audit_seq, instance.audit_hash)
    locked = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.id == instance.id))
    record_event(locked, "claimed", task_name="不会保存")
    db.session.rollback()
    db.session.refresh(instance)
    assert (instance.audit_seq, instance.audit_hash) == head
    assert verify_chain(instance.id).ok

"""退回补充材料: an approver sends a request back to the clerk, who adds documents and resubmits it."""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.processes.deployment import latest_model, spec_for
from app.processes.models import ProcessEvent, ProcessInstance, ProcessTimer
from tests.processes.conftest import instance_of, open_task, start_request, submit_task


def _send_back_and_resubmit(login, instance):
    approver = login("tj_approver")
    task = open_task(instance.id, "company_approval")
    assert approver.post(f"/processes/tasks/{task.id}/claim").status_code == 303
    page = approver.get(f"/processes/tasks/{task.id}")
    assert "退回补充材料" in page.get_data(as_text=True)
    response = submit_task(approver, task.id, {"decision": "send_back", "comment": "请补交房屋空置证明"})
    assert response.status_code == 302
    db.session.expire_all()
    assert open_task(instance.id, "company_approval") is None
    supplement = open_task(instance.id, "supplement_materials")
    assert supplement is not None
    assert supplement.lane_role == "clerk"
    clerk = login("tj_clerk")
    missing = submit_task(clerk, supplement.id, {"supplement": "", "comment": ""})
    assert missing.status_code == 400
    assert "请填写补充的材料" in missing.get_data(as_text=True)
    done = clerk.post(f"/processes/tasks/{supplement.id}", data={"supplement": "物业出具的空置证明 WY-2026-031", "comment": ""})
    assert done.status_code == 302
    db.session.expire_all()
    return approver, open_task(instance.id, "company_approval")


def test_suspension_send_back_round_trip(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    approver, again = _send_back_and_resubmit(login, instance)
    assert again is not None
    events = db.session.scalars(sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id).order_by(ProcessEvent.seq)).all()
    send_back = [e for e in events if e.event_type == "completed" and e.decision == "send_back"]
    assert len(send_back) == 1
    assert send_back[0].comment == "请补交房屋空置证明"
    supplied = [e for e in events if e.event_type == "completed" and e.task_name == "补充材料"]
    assert supplied[0].data["supplement_note"] == "物业出具的空置证明 WY-2026-031"
    # The second round arms fresh timers on the company approval.
    waiting = db.session.scalars(
        sa.select(ProcessTimer).where(ProcessTimer.instance_id == instance.id, ProcessTimer.status == "waiting")
    ).all()
    assert {t.element_id for t in waiting} == {"remind_company_approval", "escalate_company_approval", "cancel_company_approval_deadline"}
    assert submit_task(approver, again.id, {"decision": "approve", "comment": "材料齐全"}).status_code == 302
    db.session.expire_all()
    assert open_task(instance.id, "valve_close") is not None


def test_send_back_needs_comment(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    response = submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "send_back", "comment": ""})
    assert response.status_code == 400
    assert "退回时必须填写意见" in response.get_data(as_text=True)


@pytest.mark.parametrize("process_type", ["area_adjustment", "reheating", "connection"])
def test_send_back_offered(demo, make_account, login, process_type):
    spec, _ = spec_for(latest_model(demo["TJ"].id, process_type))
    approval = spec.task_specs["company_approval"]
    assert approval.extensions["properties"]["send_back"] == "supplement"
    assert spec.task_specs["supplement_materials"].lane == "clerk"
    # The resubmitted request goes back to the company approval (through its boundary-event split).
    assert [output.name for output in spec.task_specs["supplement_materials"].outputs] == ["company_approval.BoundaryEventSplit"]


def test_state_grows_linearly_with_rounds(demo, make_account, login):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    sizes = [len(db.session.get(ProcessInstance, instance.id).state)]
    for _ in range(4):
        _send_back_and_resubmit(login, instance)
        sizes.append(len(db.session.get(ProcessInstance, instance.id).state))
    growth = [after - before for before, after in zip(sizes, sizes[1:])]
    assert min(growth) > 0
    # The first round also adds the supplement's data keys. Later rounds add the same tasks,
    # so their growth stays flat instead of rising with the history.
    later = growth[1:]
    assert max(later) <= min(later) * 1.05, f"state sizes per round: {sizes}"

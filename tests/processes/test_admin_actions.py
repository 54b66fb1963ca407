"""Administrator actions on instances: suspend, resume, terminate and retry, through the instance page."""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.org.services import AccessError
from app.processes.access import running_instance
from app.processes.admin import suspend_instance
from app.processes.audit import verify_chain
from app.processes.models import HumanTask, ProcessEvent, ProcessInstance
from tests.processes.conftest import flashed, instance_of, open_task, start_request, user


def _events(instance_id):
    return db.session.scalars(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance_id).order_by(ProcessEvent.seq)
    ).all()


def _act(client, instance_id, action, reason="核查材料"):
    return client.post(f"/processes/instances/{instance_id}/{action}", data={"reason": reason})


def _status(instance_id):
    db.session.expire_all()
    return db.session.get(ProcessInstance, instance_id).status


@pytest.fixture
def started(demo, make_account, login):
    """A running TJ suspension waiting for company approval, with clients of the clerk, approver and admin."""
    account = make_account("TJ", "87.35")
    clients = {name: login(name) for name in ("tj_clerk", "tj_approver", "tj_admin")}
    assert start_request(clients["tj_clerk"], account.id).status_code == 302
    return instance_of(account.id, "suspension"), account, clients


def test_suspended_task_cannot_be_claimed(started):
    instance, _, clients = started
    admin, approver = clients["tj_admin"], clients["tj_approver"]
    task = open_task(instance.id, "company_approval")

    response = _act(admin, instance.id, "suspend", "用户申诉，暂停办理")
    assert response.status_code == 303
    assert f"挂起流程成功：流程 {instance.id} 当前为「已挂起」" in flashed(admin, response)
    assert _status(instance.id) == "suspended"

    response = approver.post(f"/processes/tasks/{task.id}/claim")
    assert response.status_code == 303
    assert "已被管理员挂起" in flashed(approver, response)
    db.session.expire_all()
    assert db.session.get(HumanTask, task.id).claimed_by_id is None

    assert _act(admin, instance.id, "resume", "申诉已处理").status_code == 303
    assert _status(instance.id) == "running"
    assert approver.post(f"/processes/tasks/{task.id}/claim").status_code == 303
    db.session.expire_all()
    assert db.session.get(HumanTask, task.id).claimed_by_id == user("tj_approver").id


def test_suspended_task_cannot_be_completed(started):
    instance, _, clients = started
    admin, approver = clients["tj_admin"], clients["tj_approver"]
    task = open_task(instance.id, "company_approval")
    assert approver.post(f"/processes/tasks/{task.id}/claim").status_code == 303
    _act(admin, instance.id, "suspend")

    response = approver.post(f"/processes/tasks/{task.id}", data={"decision": "approve", "comment": "同意"})
    assert response.status_code == 409
    assert "已被管理员挂起" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(HumanTask, task.id).status == "open"

    _act(admin, instance.id, "resume")
    response = approver.post(f"/processes/tasks/{task.id}", data={"decision": "approve", "comment": "同意"})
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(HumanTask, task.id).status == "completed"


def test_actions_record_user_and_reason(started):
    instance, _, clients = started
    admin = clients["tj_admin"]
    _act(admin, instance.id, "suspend", "用户申诉，暂停办理")
    _act(admin, instance.id, "resume", "申诉已处理")
    _act(admin, instance.id, "terminate", "用户撤回申请")

    admin_name = user("tj_admin").name
    steps = [(e.event_type, e.user_id, e.actor_name, e.comment) for e in _events(instance.id)][-3:]
    assert steps[0] == ("suspended", user("tj_admin").id, admin_name, "用户申诉，暂停办理")
    assert steps[1] == ("resumed", user("tj_admin").id, admin_name, "申诉已处理")
    assert steps[2] == ("terminated", user("tj_admin").id, admin_name, "用户撤回申请")
    assert verify_chain(instance.id).ok
    page = admin.get(f"/processes/instances/{instance.id}").get_data(as_text=True)
    assert "管理员挂起" in page
    assert "用户撤回申请" in page


def test_terminate_cancels_open_tasks(started):
    instance, account, clients = started
    admin = clients["tj_admin"]
    task = open_task(instance.id, "company_approval")
    _act(admin, instance.id, "suspend")

    response = _act(admin, instance.id, "terminate", "重复申请")
    assert f"终止流程成功：流程 {instance.id} 当前为「已终止」" in flashed(admin, response)
    assert _status(instance.id) == "terminated"
    assert db.session.get(HumanTask, task.id).status == "cancelled"
    assert _events(instance.id)[-1].data == {"status_before": "suspended", "cancelled_tasks": 1}
    assert running_instance(account.id, "suspension") is None

    response = _act(admin, instance.id, "terminate", "再次终止")
    assert "当前为「已终止」，不能终止流程" in flashed(admin, response)
    assert start_request(clients["tj_clerk"], account.id).status_code == 302
    assert instance_of(account.id, "suspension").id != instance.id


def test_suspended_instance_blocks_new_request(started):
    instance, account, clients = started
    _act(clients["tj_admin"], instance.id, "suspend")
    response = start_request(clients["tj_clerk"], account.id)
    assert f"已有办理中的报停申请（流程 {instance.id}）" in flashed(clients["tj_clerk"], response)
    assert instance_of(account.id, "suspension").id == instance.id


def test_wrong_status_is_a_conflict(started):
    instance, _, clients = started
    admin = clients["tj_admin"]
    count = len(_events(instance.id))
    for action, expected in (("resume", "不能恢复流程"), ("retry", "不能重试流程")):
        response = _act(admin, instance.id, action)
        assert expected in flashed(admin, response)
    assert _status(instance.id) == "running"
    assert len(_events(instance.id)) == count


@pytest.mark.parametrize("reason, expected", [("", "请填写挂起流程的原因"), ("   ", "请填写挂起流程的原因"), ("长" * 501, "超过 500 字上限")])
def test_reason_is_required(started, reason, expected):
    instance, _, clients = started
    admin = clients["tj_admin"]
    count = len(_events(instance.id))
    response = _act(admin, instance.id, "suspend", reason)
    assert expected in flashed(admin, response)
    assert _status(instance.id) == "running"
    assert len(_events(instance.id)) == count


@pytest.mark.parametrize("reason", ["\u200b", "\ufeff", "\xa0", "\u3000", "\u200b \u3000\ufeff\n", "\ufe0f"])
def test_invisible_reason_rejected(started, reason):
    instance, _, clients = started
    admin = clients["tj_admin"]
    count = len(_events(instance.id))
    response = _act(admin, instance.id, "terminate", reason)
    assert "请填写终止流程的原因" in flashed(admin, response)
    assert _status(instance.id) == "running"
    assert len(_events(instance.id)) == count


def test_reason_stored_without_invisible_ends(started):
    instance, _, clients = started
    _act(clients["tj_admin"], instance.id, "suspend", "\ufeff\u200b用户申诉\u3000")
    assert _events(instance.id)[-1].comment == "用户申诉"


def test_retry_restores_error_instance(started):
    instance, _, clients = started
    admin = clients["tj_admin"]
    db.session.execute(sa.update(ProcessInstance).where(ProcessInstance.id == instance.id).values(status="error"))
    db.session.commit()
    assert "重试流程" in admin.get(f"/processes/instances/{instance.id}").get_data(as_text=True)

    response = _act(admin, instance.id, "retry", "已修复部署")
    assert f"重试流程成功：流程 {instance.id} 当前为「办理中」" in flashed(admin, response)
    assert _status(instance.id) == "running"
    assert _events(instance.id)[-1].event_type == "retried"
    assert open_task(instance.id, "company_approval") is not None
    assert verify_chain(instance.id).ok


def test_retry_failure_keeps_error_status(started):
    instance, _, clients = started
    admin = clients["tj_admin"]
    db.session.execute(
        sa.update(ProcessInstance).where(ProcessInstance.id == instance.id).values(status="error", state="{}")
    )
    db.session.commit()
    count = len(_events(instance.id))

    response = _act(admin, instance.id, "retry", "再试一次")
    assert "重试流程未成功" in flashed(admin, response)
    assert _status(instance.id) == "error"
    events = _events(instance.id)
    assert len(events) == count + 1
    assert events[-1].event_type == "error"
    assert events[-1].task_name == "重试流程"
    assert verify_chain(instance.id).ok


def test_actions_need_process_admin(started):
    instance, _, clients = started
    approver, admin = clients["tj_approver"], clients["tj_admin"]
    assert 'id="admin-actions"' not in approver.get(f"/processes/instances/{instance.id}").get_data(as_text=True)
    assert 'id="admin-actions"' in admin.get(f"/processes/instances/{instance.id}").get_data(as_text=True)
    for action in ("suspend", "resume", "terminate", "retry"):
        assert _act(approver, instance.id, action).status_code == 403
    assert _status(instance.id) == "running"


def test_qd_admin_cannot_act_on_tj_instance(started, login):
    instance, _, _ = started
    qd_admin = login("qd_admin")
    count = len(_events(instance.id))
    for action in ("suspend", "resume", "terminate", "retry"):
        assert _act(qd_admin, instance.id, action).status_code == 404
    assert qd_admin.get(f"/processes/instances/{instance.id}").status_code == 404

    # Without the tenant scope of a request, the permission check still rejects the other company.
    with pytest.raises(AccessError):
        suspend_instance(instance.id, user("qd_admin"), "越权操作")
    db.session.rollback()
    assert _status(instance.id) == "running"
    assert len(_events(instance.id)) == count

"""Who may see, claim and complete process tasks, and what happens when two users act on one task."""

import threading

import sqlalchemy as sa

from app.extensions import db
from app.org.models import User
from app.org.services import scope_for
from app.processes.access import ConflictError
from app.processes.models import HumanTask, ProcessEvent, ProcessInstance
from app.processes.services import claim_task, complete_task
from app.tenancy import scoped
from tests.processes.conftest import open_task, second_tj_approver, start_request, submit_task, user


def _started(make_account, login, area="87.35", user_type="residential"):
    account = make_account("TJ", area, user_type=user_type)
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.account_id == account.id))
    return account, instance


def test_qd_users_cannot_reach_tj_tasks(demo, make_account, login):
    account, instance = _started(make_account, login)
    task = open_task(instance.id, "company_approval")
    qd_approver, qd_clerk = login("qd_approver"), login("qd_clerk")

    assert f'data-task-id="{task.id}"' not in qd_approver.get("/processes/inbox").get_data(as_text=True)
    assert qd_approver.get(f"/processes/tasks/{task.id}").status_code == 404
    assert qd_approver.post(f"/processes/tasks/{task.id}/claim").status_code == 404
    assert qd_approver.post(f"/processes/tasks/{task.id}", data={"decision": "approve"}).status_code == 404
    assert qd_approver.get(f"/processes/instances/{instance.id}").status_code == 404
    assert qd_clerk.post(f"/processes/suspension/start/{account.id}", data={"reason": "vacant"}).status_code == 404
    db.session.expire_all()
    assert db.session.get(HumanTask, task.id).claimed_by_id is None
    assert db.session.scalar(sa.select(sa.func.count(ProcessInstance.id))) == 1


def test_lanes_limit_who_acts(demo, make_account, login):
    account, instance = _started(make_account, login, area="547.07", user_type="non_residential")
    company_task = open_task(instance.id, "company_approval")

    assert login("hq_approver").post(f"/processes/tasks/{company_task.id}/claim").status_code == 403
    assert login("tj_field").post(f"/processes/tasks/{company_task.id}/claim").status_code == 403
    assert login("tj_clerk").get(f"/processes/tasks/{company_task.id}").status_code == 403
    assert login("tj_approver").post(f"/processes/suspension/start/{account.id}", data={"reason": "vacant"}).status_code == 403

    submit_task(login("tj_approver"), company_task.id, {"decision": "approve"})
    group_task = open_task(instance.id, "group_approval")
    assert login("hq_auditor").post(f"/processes/tasks/{group_task.id}/claim").status_code == 403
    assert login("tj_approver").post(f"/processes/tasks/{group_task.id}/claim").status_code == 403
    assert f'data-task-id="{group_task.id}"' not in login("qd_approver").get("/processes/inbox").get_data(as_text=True)
    assert f'data-task-id="{group_task.id}"' in login("hq_approver").get("/processes/inbox").get_data(as_text=True)


def test_two_approvers_one_task(demo, make_account, login):
    second_tj_approver(demo)
    account, instance = _started(make_account, login)
    task = open_task(instance.id, "company_approval")
    first, second = login("tj_approver"), login("tj_approver2")

    assert first.post(f"/processes/tasks/{task.id}/claim").status_code == 303
    response = second.post(f"/processes/tasks/{task.id}/claim", follow_redirects=True)
    assert "已由 津南热力分公司审批人 签收" in response.get_data(as_text=True)
    response = second.post(f"/processes/tasks/{task.id}", data={"decision": "reject", "comment": "抢先驳回"})
    assert response.status_code == 409
    assert "请先签收再办理" in response.get_data(as_text=True)

    assert first.post(f"/processes/tasks/{task.id}", data={"decision": "approve", "comment": "同意"}).status_code == 302
    response = first.post(f"/processes/tasks/{task.id}", data={"decision": "approve", "comment": "再次提交"})
    assert response.status_code == 409
    assert "不能重复提交" in response.get_data(as_text=True)

    completions = db.session.scalars(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "completed")
    ).all()
    assert [(e.actor_name, e.comment) for e in completions] == [("津南热力分公司审批人", "同意")]


def test_release_returns_task_to_pool(demo, make_account, login):
    second_tj_approver(demo)
    account, instance = _started(make_account, login)
    task = open_task(instance.id, "company_approval")
    first, second = login("tj_approver"), login("tj_approver2")
    first.post(f"/processes/tasks/{task.id}/claim")
    assert second.post(f"/processes/tasks/{task.id}/release").status_code == 303
    db.session.expire_all()
    assert db.session.get(HumanTask, task.id).claimed_by_name == "津南热力分公司审批人"
    first.post(f"/processes/tasks/{task.id}/release")
    assert submit_task(second, task.id, {"decision": "approve"}).status_code == 302


def test_concurrent_submissions_complete_once(app_ctx, demo, make_account, login):
    account, instance = _started(make_account, login)
    instance_id = instance.id
    task_id = open_task(instance_id, "company_approval").id
    approver = user("tj_approver")
    approver_id = approver.id
    with scoped(scope_for(approver)):
        claim_task(task_id, approver)
    db.session.remove()

    barrier = threading.Barrier(2, timeout=10)
    outcomes = []

    def submit():
        with app_ctx.app_context():
            actor = db.session.get(User, approver_id)
            with scoped(scope_for(actor)):
                barrier.wait()
                try:
                    complete_task(task_id, actor, {"decision": "approve", "comment": "并发提交"})
                    outcomes.append("ok")
                except ConflictError as error:
                    db.session.rollback()
                    outcomes.append(str(error))
            db.session.remove()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes, key=len) == ["ok", "任务「分公司审批」已办结，不能重复提交。"]
    completions = db.session.scalar(
        sa.select(sa.func.count(ProcessEvent.id)).where(ProcessEvent.instance_id == instance_id, ProcessEvent.event_type == "completed")
    )
    assert completions == 1
    assert open_task(instance_id, "valve_close") is not None


def test_lane_refusal_names_role(demo, make_account, login):
    account, instance = _started(make_account, login)
    task = open_task(instance.id, "company_approval")
    clerk = login("tj_clerk")

    chinese = clerk.get(f"/processes/tasks/{task.id}").get_data(as_text=True)
    assert clerk.post("/language", data={"locale": "en"}).status_code in (302, 303)
    english = clerk.get(f"/processes/tasks/{task.id}").get_data(as_text=True)

    assert "由角色「分公司审批人」办理" in chinese
    assert "Company approver" in english
    assert "company_approver" not in english

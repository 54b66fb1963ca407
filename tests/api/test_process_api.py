"""The JSON API /api/v1: the whole suspension flow, task list filters and paging, validation errors, company isolation and the OpenAPI document."""

import pytest
import sqlalchemy as sa

from app.api.openapi import openapi_path
from app.extensions import db
from app.processes.deployment import BPMN_DIR, deploy_model
from app.processes.models import HumanTask, ProcessEvent, ProcessInstance
from tests.processes.conftest import fire_timer_of

API = "/api/v1"
SUSPENSION_XML = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")


def _start(client, account_no, fields=None, process_type="suspension"):
    body = {"account_no": account_no, "fields": fields if fields is not None else {"reason": "vacant", "comment": "房屋空置"}}
    return client.post(f"{API}/processes/{process_type}/instances", json=body)


def _task_ids(client, **filters):
    response = client.get(f"{API}/tasks", query_string=filters)
    assert response.status_code == 200, response.get_json()
    return [task["id"] for task in response.get_json()["tasks"]]


def _open_task(resource, form, lane_role="company_approver"):
    matches = [task for task in resource["open_tasks"] if task["form"] == form and task["lane_role"] == lane_role]
    assert len(matches) == 1, resource["open_tasks"]
    return matches[0]


def _claim_and_complete(client, task_id, body):
    claimed = client.post(f"{API}/tasks/{task_id}/claim", json={})
    assert claimed.status_code == 200, claimed.get_json()
    response = client.post(f"{API}/tasks/{task_id}/complete", json=body)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _assert_error(response, status, error_code):
    body = response.get_json()
    assert response.status_code == status, body
    assert body["status"] == status
    assert body["error_code"] == error_code
    assert body["message"]
    return body


def _count(model):
    return db.session.scalar(sa.select(sa.func.count(model.id)))


def _company_task_with_diagram(demo, make_account, login, old, new):
    """Deploy TJ's suspension diagram with `old` replaced by `new`, start a request and return its company approval task id."""
    xml = SUSPENSION_XML.replace(old, new)
    assert xml != SUSPENSION_XML
    deploy_model(demo["TJ"].id, "suspension", xml)
    db.session.commit()
    account = make_account("TJ", "87.35")
    response = _start(login("tj_clerk"), account.account_no)
    assert response.status_code == 201, response.get_json()
    return _open_task(response.get_json(), "approval")["id"]


def _failed_approval(client, task_id):
    """Approve a task whose next step fails, and return the message of the 409 process_failed response."""
    response = client.post(f"{API}/tasks/{task_id}/complete", json={"decision": "approve", "comment": "同意"})
    return _assert_error(response, 409, "process_failed")["message"]


def _has_chinese(text):
    return any("\u4e00" <= char <= "\u9fff" for char in text)


def test_expression_failure_in_reader_language(demo, make_account, login):
    task_id = _company_task_with_diagram(demo, make_account, login, "company_decision == 'reject'", "company_decison == 'reject'")
    approver = login("tj_approver")
    assert approver.post(f"{API}/tasks/{task_id}/claim", json={}).status_code == 200

    chinese = _failed_approval(approver, task_id)
    assert "的表达式运行失败：名称 'company_decison' 不在任务数据中" in chinese
    assert "（原文：expression of element " in chinese

    # The failed completion was rolled back, so the same task fails again for the English reader.
    assert approver.post("/language", data={"locale": "en"}).status_code == 302
    english = _failed_approval(approver, task_id)
    assert english.startswith("expression of element ")
    assert "company_decison" in english
    assert not _has_chinese(english)


def test_service_failure_in_reader_language(demo, make_account, login):
    parameter = '<spiffworkflow:parameter id="account_id" type="int" value="account_id" />'
    wrong_account = '<spiffworkflow:parameter id="account_id" type="int" value="account_id + 1" />'
    task_id = _company_task_with_diagram(demo, make_account, login, parameter, wrong_account)
    approver = login("tj_approver")
    assert approver.post(f"{API}/tasks/{task_id}/claim", json={}).status_code == 200

    chinese = _failed_approval(approver, task_id)
    assert chinese.startswith("元素 rebill_suspension_task 的服务 'rebill_suspension'运行失败：Parameter account_id=")
    assert approver.post("/language", data={"locale": "en"}).status_code == 302
    english = _failed_approval(approver, task_id)
    assert english.startswith("service 'rebill_suspension' of element rebill_suspension_task failed: Parameter account_id=")
    assert not _has_chinese(english)

    # The history stores the Chinese text of each failure, for the audit hash and exports,
    # and the API shows it in the reader's language, as the instance page does.
    instance_id = _instance_of_task(task_id)
    stored = db.session.scalars(sa.select(ProcessEvent.comment).filter_by(instance_id=instance_id, event_type="error")).all()
    assert len(stored) == 2
    assert stored[0].startswith("元素 rebill_suspension_task 的服务")
    detail = approver.get(f"{API}/instances/{instance_id}").get_json()
    errors = [event for event in detail["events"] if event["event_type"] == "error"]
    assert len(errors) == 2
    assert errors[0]["comment"].startswith("service 'rebill_suspension' of element rebill_suspension_task failed: Parameter account_id=")


def test_timer_events_in_reader_language(demo, make_account, login):
    account = make_account("TJ", "87.35")
    started = _start(login("tj_clerk"), account.account_no).get_json()
    fire_timer_of(started["id"], "remind_company_approval")
    fire_timer_of(started["id"], "escalate_company_approval")
    admin = login("tj_admin")

    chinese = admin.get(f"{API}/instances/{started['id']}").get_json()["events"]
    [escalated] = [event for event in chinese if event["event_type"] == "escalated"]
    assert escalated["task_name"] == "超时转集团审批"
    assert escalated["comment"] == "定时事件 escalate_company_approval 到期：超时转集团审批。"
    [reminded] = [event for event in chinese if event["event_type"] == "reminded"]
    assert reminded["task_name"] == "分公司审批"
    assert reminded["comment"] == "超时催办：待办「分公司审批」已超过办理期限，请尽快办理。"

    assert admin.post("/language", data={"locale": "en"}).status_code == 302
    english = admin.get(f"{API}/instances/{started['id']}").get_json()["events"]
    [escalated] = [event for event in english if event["event_type"] == "escalated"]
    assert escalated["task_name"] == "Escalated to group approval after the deadline"
    assert escalated["comment"] == "Timer event escalate_company_approval is due: Escalated to group approval after the deadline."
    [reminded] = [event for event in english if event["event_type"] == "reminded"]
    # The step is one of the default diagram's, so its name is translated, but the comment
    # quotes the task title as the diagram names it.
    assert reminded["task_name"] == "Company approval"
    assert reminded["comment"] == "Overdue reminder: the task “分公司审批” is past its due date. Please handle it soon."
    # A comment a user typed is returned as stored.
    [filed] = [event for event in english if event["event_type"] == "started"]
    assert filed["comment"] == "房屋空置"
    # The stored texts stay Chinese for the audit hash.
    stored = db.session.scalar(sa.select(ProcessEvent).filter_by(instance_id=started["id"], event_type="escalated"))
    assert stored.task_name == "超时转集团审批"
    assert stored.comment == "定时事件 escalate_company_approval 到期：超时转集团审批。"


def _instance_of_task(task_id):
    return db.session.scalar(sa.select(HumanTask.instance_id).filter_by(id=task_id))


def test_suspension_flow_through_api(demo, make_account, login):
    account = make_account("TJ", "547.07", user_type="non_residential")
    clerk, approver, group, field = login("tj_clerk"), login("tj_approver"), login("hq_approver"), login("tj_field")

    response = _start(clerk, account.account_no)
    assert response.status_code == 201, response.get_json()
    started = response.get_json()
    assert started["status"] == "running"
    assert started["process_type"] == "suspension"
    assert started["account_no"] == account.account_no
    assert started["chain_ok"] is True
    company_task = _open_task(started, "approval")
    assert company_task["title"] == "分公司审批"
    assert company_task["created_at"].endswith("+00:00")

    assert company_task["id"] in _task_ids(approver)
    assert company_task["id"] in _task_ids(approver, process_type="suspension", account_no=account.account_no)
    assert company_task["id"] not in _task_ids(approver, process_type="waiver")
    assert company_task["id"] not in _task_ids(approver, account_no="999999999999999")
    assert company_task["id"] not in _task_ids(group)
    listed = approver.get(f"{API}/tasks").get_json()["tasks"][0]
    assert listed["account_no"] == account.account_no
    assert listed["company_code"] == "TJ"

    claimed = approver.post(f"{API}/tasks/{company_task['id']}/claim", json={}).get_json()
    assert claimed["claimed_by_name"] == "津南热力分公司审批人"
    after_company = approver.post(
        f"{API}/tasks/{company_task['id']}/complete", json={"decision": "approve", "comment": "材料齐全，同意报停"}
    ).get_json()
    group_task = _open_task(after_company, "approval", "group_approver")
    assert group_task["id"] in _task_ids(group, account_no=account.account_no)

    after_group = _claim_and_complete(group, group_task["id"], {"decision": "approve", "comment": "集团同意"})
    rebilled = [event for event in after_group["events"] if event["event_type"] == "rebilled"]
    assert rebilled[0]["data"]["amount"] == "-17506.24"
    assert rebilled[0]["data"]["receivable_after"] == "4376.56"
    valve_task = _open_task(after_group, "valve_close", "field_staff")

    finished = _claim_and_complete(
        field, valve_task["id"], {"comment": "用户在场", "fields": {"result": "sealed", "seal_no": "TJ-2025-0001"}}
    )
    assert finished["status"] == "completed"
    assert finished["open_tasks"] == []

    detail = clerk.get(f"{API}/instances/{started['id']}").get_json()
    assert detail["status"] == "completed"
    assert detail["chain_ok"] is True
    steps = [(e["event_type"], e["actor_name"], e["decision"], e["comment"]) for e in detail["events"]]
    assert ("started", "津南热力营业员", None, "房屋空置") in steps
    assert ("completed", "津南热力分公司审批人", "approve", "材料齐全，同意报停") in steps
    assert ("completed", "北方热力集团审批人", "approve", "集团同意") in steps
    assert steps[-1][0] == "finished"
    assert [e["seq"] for e in detail["events"]] == list(range(1, len(steps) + 1))


def test_start_validation_errors(demo, make_account, login):
    account = make_account("TJ", "87.35")
    clerk = login("tj_clerk")

    body = _assert_error(clerk.post(f"{API}/processes/suspension/instances", json={"fields": {}}), 400, "validation_error")
    assert body["errors"] == {"account_no": ["Missing data for required field."]}
    assert "account_no" in body["message"]

    body = _assert_error(_start(clerk, account.account_no, {"reason": 3}), 400, "validation_error")
    assert body["errors"] == {"fields": {"reason": {"value": ["Not a valid string."]}}}

    body = _assert_error(_start(clerk, account.account_no, {"reason": "长" * 101}), 400, "invalid_input")
    assert "报停原因共 101 字" in body["message"]

    body = _assert_error(_start(clerk, account.account_no, process_type="teleport"), 404, "not_found")
    assert "teleport" in body["message"]
    assert "suspension" in body["message"]

    response = clerk.post(f"{API}/processes/suspension/instances", data={"account_no": account.account_no})
    assert "Content-Type: application/json" in _assert_error(response, 400, "bad_request")["message"]
    response = clerk.post(f"{API}/processes/suspension/instances", data="{not json", content_type="application/json")
    assert "not valid JSON" in _assert_error(response, 400, "bad_request")["message"]
    response = clerk.post(f"{API}/processes/suspension/instances", json=["a", "list"])
    assert "JSON array, not an object" in _assert_error(response, 400, "bad_request")["message"]
    body = _assert_error(_start(clerk, "1\x002"), 400, "validation_error")
    assert body["errors"] == {"account_no": ["Contains a NUL character (\\u0000); remove it."]}

    _assert_error(_start(clerk, "999999999999999"), 404, "not_found")
    assert _count(ProcessInstance) == 0
    assert _count(ProcessEvent) == 0

    assert _start(clerk, account.account_no).status_code == 201
    _assert_error(_start(clerk, account.account_no), 409, "conflict")
    assert _count(ProcessInstance) == 1


def test_task_validation_errors(demo, make_account, login):
    account = make_account("TJ", "87.35")
    clerk, approver = login("tj_clerk"), login("tj_approver")
    task_id = _open_task(_start(clerk, account.account_no).get_json(), "approval")["id"]
    events_before = _count(ProcessEvent)

    _assert_error(approver.get(f"{API}/tasks", query_string={"process_type": "teleport"}), 400, "validation_error")
    body = _assert_error(approver.post(f"{API}/tasks/{task_id}/complete", json={"decision": "approve"}), 409, "conflict")
    assert "请先签收" in body["message"]
    _assert_error(approver.post(f"{API}/tasks/{task_id}/claim"), 400, "bad_request")
    assert approver.post(f"{API}/tasks/{task_id}/claim", json={}).status_code == 200

    body = _assert_error(approver.post(f"{API}/tasks/{task_id}/complete", json={"decision": "maybe"}), 400, "validation_error")
    assert "decision" in body["errors"]
    body = _assert_error(approver.post(f"{API}/tasks/{task_id}/complete", json={"comment": "没写意见"}), 400, "invalid_input")
    assert "审批意见" in body["message"]
    _assert_error(approver.post(f"{API}/tasks/{task_id}/complete", json={"decision": "approve", "comment": "长" * 501}),
                  400, "validation_error")
    _assert_error(clerk.post(f"{API}/tasks/{task_id}/claim", json={}), 403, "forbidden")
    _assert_error(approver.post(f"{API}/tasks/2147483648/claim", json={}), 404, "not_found")

    db.session.expire_all()
    assert db.session.get(HumanTask, task_id).status == "open"
    # Only the claim added an event.
    assert _count(ProcessEvent) == events_before + 1


def test_suspended_instance_rejects_claim(demo, make_account, login):
    account = make_account("TJ", "87.35")
    started = _start(login("tj_clerk"), account.account_no).get_json()
    task_id = _open_task(started, "approval")["id"]
    admin = login("tj_admin")
    assert admin.post(f"/processes/instances/{started['id']}/suspend", data={"reason": "核查"}).status_code == 303

    body = _assert_error(login("tj_approver").post(f"{API}/tasks/{task_id}/claim", json={}), 409, "conflict")
    assert "已被管理员挂起" in body["message"]
    assert login("tj_approver").get(f"{API}/instances/{started['id']}").get_json()["status"] == "suspended"


def test_other_company_ids_are_not_found(demo, make_account, login):
    tj_account = make_account("TJ", "87.35")
    started = _start(login("tj_clerk"), tj_account.account_no).get_json()
    task_id = _open_task(started, "approval")["id"]
    qd_clerk, qd_approver = login("qd_clerk"), login("qd_approver")
    events_before = _count(ProcessEvent)

    _assert_error(qd_approver.get(f"{API}/instances/{started['id']}"), 404, "not_found")
    _assert_error(qd_approver.post(f"{API}/tasks/{task_id}/claim", json={}), 404, "not_found")
    _assert_error(qd_approver.post(f"{API}/tasks/{task_id}/complete", json={"decision": "approve"}), 404, "not_found")
    _assert_error(_start(qd_clerk, tj_account.account_no), 404, "not_found")
    assert task_id not in _task_ids(qd_approver)
    assert _task_ids(qd_approver, account_no=tj_account.account_no) == []

    db.session.expire_all()
    assert db.session.get(HumanTask, task_id).claimed_by_id is None
    assert _count(ProcessEvent) == events_before
    assert _count(ProcessInstance) == 1


@pytest.mark.parametrize("method, path", [("get", "/tasks"), ("get", "/instances/1"), ("post", "/tasks/1/claim")])
def test_requires_login(client, method, path):
    response = getattr(client, method)(f"{API}{path}", json={} if method == "post" else None)
    _assert_error(response, 401, "unauthorized")


def test_openapi_lists_every_route(app_ctx, client):
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.")
    assert document["paths"]["/api/v1/processes/{process_type}/instances"]["post"]["parameters"][0]["schema"]["enum"][0] == "suspension"
    for name in ("StartRequest", "CompleteRequest", "Instance", "InboxTask", "Error"):
        assert name in document["components"]["schemas"]

    rules = [rule for rule in app_ctx.url_map.iter_rules() if rule.rule.startswith("/api/v1")]
    assert len(rules) >= 6
    for rule in rules:
        path = openapi_path(rule.rule)
        assert path in document["paths"], f"{rule.rule} is missing from openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in document["paths"][path], f"{method} {rule.rule} is missing from openapi.json"


def test_post_needs_json_not_csrf_token(demo, make_account, login, monkeypatch):
    account = make_account("TJ", "87.35")
    task_id = _open_task(_start(login("tj_clerk"), account.account_no).get_json(), "approval")["id"]
    approver = login("tj_approver")
    monkeypatch.setitem(approver.application.config, "WTF_CSRF_ENABLED", True)

    # A cross-site HTML form can only send form encodings, which the API rejects.
    _assert_error(approver.post(f"{API}/tasks/{task_id}/claim", data={}), 400, "bad_request")
    db.session.expire_all()
    assert db.session.get(HumanTask, task_id).claimed_by_id is None

    assert approver.post(f"{API}/tasks/{task_id}/claim", json={}).status_code == 200


def _page(client, **query):
    response = client.get(f"{API}/tasks", query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_task_list_pages_by_cursor(demo, make_account, login):
    accounts = [make_account("TJ", "87.35") for _ in range(5)]
    clerk, approver = login("tj_clerk"), login("tj_approver")
    started = [_open_task(_start(clerk, account.account_no).get_json(), "approval")["id"] for account in accounts]

    first = _page(approver, limit=2)
    assert [task["id"] for task in first["tasks"]] == started[:2]
    assert first["tasks"][0]["account_no"] == accounts[0].account_no
    assert first["tasks"][0]["company_code"] == "TJ"
    assert first["tasks"][0]["process_type"] == "suspension"
    assert first["tasks"][0]["due_at"]
    assert first["tasks"][0]["overdue"] is False
    second = _page(approver, limit=2, after=first["next_after"])
    assert [task["id"] for task in second["tasks"]] == started[2:4]
    last = _page(approver, limit=2, after=second["next_after"])
    assert [task["id"] for task in last["tasks"]] == started[4:]
    assert last["next_after"] is None
    newest = _page(approver, limit=2, sort="created_desc")
    assert [task["id"] for task in newest["tasks"]] == started[:2:-1][:2]


def test_task_list_filters(demo, make_account, login):
    accounts = [make_account("TJ", "87.35") for _ in range(3)]
    clerk, approver = login("tj_clerk"), login("tj_approver")
    started = [_open_task(_start(clerk, account.account_no).get_json(), "approval")["id"] for account in accounts]
    db.session.execute(sa.update(HumanTask).where(HumanTask.id == started[1]).values(due_at=None))
    task = db.session.get(HumanTask, started[2])
    task.due_at = task.created_at.replace(year=2020)
    db.session.commit()

    assert _task_ids(approver, process_type="suspension") == started
    assert _task_ids(approver, process_type="waiver") == []
    assert _task_ids(approver, account_no=accounts[0].account_no) == started[:1]
    assert _task_ids(approver, account_no=accounts[0].account_no[:6]) == started
    overdue = _page(approver, overdue="true")["tasks"]
    assert [item["id"] for item in overdue] == started[2:]
    assert overdue[0]["overdue"] is True
    # A task without a due time is left out of the due-date order.
    assert _task_ids(approver, sort="due") == [started[2], started[0]]

    _claim_and_complete(approver, started[0], {"decision": "approve", "comment": "同意"})
    assert started[0] in _task_ids(approver, status="completed")
    assert started[0] not in _task_ids(approver)


def test_task_list_company_filter_for_group(demo, make_account, login):
    tj_task = _open_task(_start(login("tj_clerk"), make_account("TJ", "87.35").account_no).get_json(), "approval")["id"]
    qd_task = _open_task(_start(login("qd_clerk"), make_account("QD", "87.35").account_no).get_json(), "approval")["id"]
    # Both requests wait in the group lane, as after an escalation.
    db.session.execute(sa.update(HumanTask).where(HumanTask.id.in_([tj_task, qd_task])).values(lane_role="group_approver"))
    db.session.commit()
    hq = login("hq_approver")
    assert set(_task_ids(hq)) == {tj_task, qd_task}
    assert _task_ids(hq, company="TJ") == [tj_task]
    assert _task_ids(hq, company="QD") == [qd_task]
    body = _assert_error(hq.get(f"{API}/tasks", query_string={"company": "XX"}), 400, "invalid_input")
    assert "XX" in body["message"]
    # Company staff see their own company's lanes only, whatever company they name.
    assert _task_ids(login("qd_approver"), company="TJ") == []


def test_task_list_rejects_bad_query(demo, login):
    approver = login("tj_approver")
    _assert_error(approver.get(f"{API}/tasks", query_string={"limit": "0"}), 400, "validation_error")
    _assert_error(approver.get(f"{API}/tasks", query_string={"limit": "201"}), 400, "validation_error")
    _assert_error(approver.get(f"{API}/tasks", query_string={"status": "lost"}), 400, "validation_error")
    _assert_error(approver.get(f"{API}/tasks", query_string={"sort": "random"}), 400, "validation_error")
    _assert_error(approver.get(f"{API}/tasks", query_string={"account_no": "12%"}), 400, "validation_error")
    body = _assert_error(approver.get(f"{API}/tasks", query_string={"after": "yesterday"}), 400, "invalid_input")
    assert "分页参数无效" in body["message"]


def test_openapi_describes_task_filters(app_ctx, client):
    document = client.get(f"{API}/openapi.json").get_json()
    parameters = {item["name"]: item for item in document["paths"]["/api/v1/tasks"]["get"]["parameters"]}
    assert set(parameters) >= {"process_type", "company", "account_no", "status", "overdue", "sort", "after", "limit"}
    assert parameters["limit"]["schema"]["maximum"] == 200
    page = document["components"]["schemas"]["TaskPage"]
    assert set(page["properties"]) == {"tasks", "next_after"}

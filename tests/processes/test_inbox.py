"""The inbox: due dates and overdue marks, filters, keyset paging and delegation."""

import re
from datetime import timedelta, timezone

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.processes.access import ConflictError, InputError
from app.processes.inbox import InboxFilters, delegate_task, inbox_page, is_overdue, parse_filters
from app.processes.models import ProcessEvent
from tests.processes.conftest import (
    instance_of, open_task, second_tj_approver, start_process_request, start_request, submit_task, user,
)

UTC = timezone.utc


def _suspensions(login, make_account, code, count):
    clerk = login(f"{code.lower()}_clerk")
    instances = []
    for _ in range(count):
        account = make_account(code, "87.35")
        assert start_request(clerk, account.id).status_code == 302
        instances.append(instance_of(account.id, "suspension"))
    return instances


def test_inbox_marks_overdue(demo, make_account, login):
    (instance,) = _suspensions(login, make_account, "TJ", 1)
    task = open_task(instance.id, "company_approval")
    due = task.due_at if task.due_at.tzinfo else task.due_at.replace(tzinfo=UTC)
    approver = user("tj_approver")
    assert is_overdue(task, now=due - timedelta(seconds=1)) is False
    assert is_overdue(task, now=due + timedelta(seconds=1)) is True
    rows, _ = inbox_page(approver, InboxFilters(overdue=True), now=due - timedelta(seconds=1))
    assert rows == []
    rows, _ = inbox_page(approver, InboxFilters(overdue=True), now=due + timedelta(seconds=1))
    assert [row[0].id for row in rows] == [task.id]


def test_inbox_filters(demo, make_account, login):
    suspensions = _suspensions(login, make_account, "TJ", 2)
    waiver_account = make_account("TJ", "87.35")
    clerk = login("tj_clerk")
    response = start_process_request(clerk, "waiver", waiver_account.id, {
        "category": "hardship", "mode": "amount", "amount": "100.00", "percent": "", "evidence": "困难证明 2025-018", "comment": "",
    })
    assert response.status_code == 302
    approver = user("tj_approver")
    rows, _ = inbox_page(approver, InboxFilters())
    assert len(rows) == 3
    rows, _ = inbox_page(approver, InboxFilters(process_type="waiver"))
    assert [row[1].id for row in rows] == [waiver_account.id]
    rows, _ = inbox_page(approver, InboxFilters(process_type="suspension"))
    assert len(rows) == 2
    second = rows[1][1]
    assert second.id == suspensions[1].account_id
    rows, _ = inbox_page(approver, InboxFilters(account_no=second.account_no))
    assert [row[1].id for row in rows] == [second.id]
    rows, _ = inbox_page(approver, InboxFilters(status="completed"))
    assert rows == []
    # The clerk acts in no approval lane, and QD's approver sees none of TJ's tasks.
    assert inbox_page(user("tj_clerk"), InboxFilters(process_type="suspension"))[0] == []
    assert inbox_page(user("qd_approver"), InboxFilters())[0] == []


def test_inbox_group_company_filter(demo, make_account, login):
    # 250 m² residential is above the TJ and QD suspension area threshold of 200 m², so both go to the group.
    for code in ("TJ", "QD"):
        account = make_account(code, "250.00")
        assert start_request(login(f"{code.lower()}_clerk"), account.id).status_code == 302
        instance = instance_of(account.id, "suspension")
        approver = login(f"{code.lower()}_approver")
        assert submit_task(approver, open_task(instance.id, "company_approval").id, {"decision": "approve", "comment": "同意"}).status_code == 302
    hq = user("hq_approver")
    rows, _ = inbox_page(hq, InboxFilters())
    assert {row[2].code for row in rows} == {"TJ", "QD"}
    rows, _ = inbox_page(hq, InboxFilters(company_id=demo["QD"].id))
    assert [row[2].code for row in rows] == ["QD"]


def test_inbox_pages_without_gaps(demo, make_account, login):
    instances = _suspensions(login, make_account, "TJ", 5)
    expected = [open_task(instance.id, "company_approval").id for instance in instances]
    approver = user("tj_approver")
    for sort, order in (("created", expected), ("created_desc", expected[::-1]), ("due", expected)):
        seen, cursor, pages = [], "", 0
        while True:
            rows, cursor = inbox_page(approver, InboxFilters(sort=sort, after=cursor), page_size=2)
            seen.extend(row[0].id for row in rows)
            pages += 1
            if not cursor:
                break
        assert seen == order, sort
        assert pages == 3


def test_inbox_rejects_bad_filters(demo, login):
    with pytest.raises(InputError, match="状态"):
        parse_filters({"status": "bogus"})
    with pytest.raises(InputError, match="分页"):
        parse_filters({"after": "not-a-cursor"})
    with pytest.raises(InputError, match="用户编号"):
        parse_filters({"account_no": "12%"})
    response = login("tj_approver").get("/processes/inbox?sort=bogus")
    assert response.status_code == 400
    assert "排序方式「bogus」无效" in response.get_data(as_text=True)
    assert login("tj_approver").get("/processes/inbox?process_type=suspension&overdue=1&sort=due").status_code == 200


def test_inbox_bad_status_lists_values(demo, login):
    approver = login("tj_approver")
    response = approver.get("/processes/inbox?status=done")
    assert response.status_code == 400
    assert "待办（open）、已办（completed）、已取消（cancelled）" in response.get_data(as_text=True)

    assert approver.post("/language", data={"locale": "en"}).status_code in (302, 303)
    response = approver.get("/processes/inbox?status=done")
    assert response.status_code == 400
    assert "choose one of: Open (open), Done (completed), Cancelled (cancelled)." in response.get_data(as_text=True)


def _decision_cells(client):
    page = client.get("/processes/inbox?status=completed").get_data(as_text=True)
    return re.findall(r'<td class="decision">([^<]*)</td>', page)


def test_done_tasks_show_decision(demo, make_account, login):
    approved, rejected = _suspensions(login, make_account, "TJ", 2)
    approver = login("tj_approver")
    for instance, decision in ((approved, "approve"), (rejected, "reject")):
        task = open_task(instance.id, "company_approval")
        response = submit_task(approver, task.id, {"decision": decision, "comment": "审核"})
        assert response.status_code == 302, response.get_data(as_text=True)

    assert sorted(_decision_cells(approver)) == sorted(["同意", "驳回"])
    open_page = approver.get("/processes/inbox").get_data(as_text=True)
    assert 'class="decision"' not in open_page

    assert approver.post("/language", data={"locale": "en"}).status_code in (302, 303)
    assert sorted(_decision_cells(approver)) == ["Approve", "Reject"]


def test_delegate_to_colleague(demo, make_account, login):
    colleague = second_tj_approver(demo)
    (instance,) = _suspensions(login, make_account, "TJ", 1)
    task = open_task(instance.id, "company_approval")
    approver = login("tj_approver")
    response = approver.post(f"/processes/tasks/{task.id}/delegate", data={"user_id": str(colleague.id), "comment": "休假，请代办"})
    assert response.status_code == 303
    db.session.expire_all()
    task = open_task(instance.id, "company_approval")
    assert task.claimed_by_id == colleague.id
    assert task.delegated_to_name == "津南第二审批人"
    event = db.session.scalar(sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "delegated"))
    assert event.comment == "休假，请代办"
    assert event.data["to_user_id"] == colleague.id
    # The original approver can no longer claim it; the colleague completes it.
    assert approver.post(f"/processes/tasks/{task.id}/claim").status_code == 303
    db.session.expire_all()
    assert open_task(instance.id, "company_approval").claimed_by_id == colleague.id
    other = login("tj_approver2")
    assert other.post(f"/processes/tasks/{task.id}", data={"decision": "approve", "comment": "同意"}).status_code == 302
    db.session.expire_all()
    assert open_task(instance.id, "valve_close") is not None


def test_delegate_checks_target(demo, make_account, login):
    colleague = second_tj_approver(demo)
    (instance,) = _suspensions(login, make_account, "TJ", 1)
    task = open_task(instance.id, "company_approval")
    approver = user("tj_approver")
    with pytest.raises(InputError, match="转办对象"):
        delegate_task(task.id, approver, user("tj_clerk").id)
    with pytest.raises(InputError, match="转办对象"):
        delegate_task(task.id, approver, user("qd_approver").id)
    with pytest.raises(InputError, match="自己"):
        delegate_task(task.id, approver, approver.id)
    db.session.rollback()
    # Once the colleague has claimed it, only they may hand it on.
    assert login("tj_approver2").post(f"/processes/tasks/{task.id}/claim").status_code == 303
    with pytest.raises(ConflictError, match="签收"):
        delegate_task(task.id, user("tj_approver"), colleague.id)
    db.session.rollback()
    response = login("tj_approver2").post(f"/processes/tasks/{task.id}/delegate", data={"user_id": "abc"})
    assert response.status_code == 303
    db.session.expire_all()
    assert open_task(instance.id, "company_approval").claimed_by_id == colleague.id

"""The HQ process audit explorer and the dashboard's process steps, on requests of two companies."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.hq.audit import parse_filters, search_instances
from app.hq.dashboard import today
from app.hq.models import StepDailyTotal
from app.hq.totals import rebuild_step_totals
from tests.processes.conftest import instance_of, make_account, open_task, start_request, submit_task  # noqa: F401


@pytest.fixture
def two_requests(make_account, login):
    """A 报停 request filed by tj_clerk and one by qd_clerk; returns the two instances."""
    tj = make_account("TJ", "80.00")
    qd = make_account("QD", "95.50")
    assert start_request(login("tj_clerk"), tj.id).status_code in (302, 303)
    assert start_request(login("qd_clerk"), qd.id).status_code in (302, 303)
    return instance_of(tj.id, "suspension"), instance_of(qd.id, "suspension"), tj, qd


def _hits(client, query):
    page = client.get(f"/hq/audit?{query}")
    assert page.status_code == 200, page.get_data(as_text=True)
    text = page.get_data(as_text=True)
    return {int(part.split('"')[0]) for part in text.split('data-instance="')[1:]}, text


def test_finds_instances_of_all_companies_by_each_filter(two_requests, login):
    tj_instance, qd_instance, tj, qd = two_requests
    client = login("hq_auditor")
    both = {tj_instance.id, qd_instance.id}
    assert _hits(client, "process_type=suspension")[0] == both
    assert _hits(client, "process_type=waiver")[0] == set()
    assert _hits(client, f"account_no={qd.account_no}")[0] == {qd_instance.id}
    assert _hits(client, "company=TJ")[0] == {tj_instance.id}
    assert _hits(client, "user=tj_clerk")[0] == {tj_instance.id}
    assert _hits(client, f"outcome={tj_instance.status}")[0] == both
    assert _hits(client, "outcome=completed")[0] == set()
    day = today()
    assert _hits(client, f"date_from={day.isoformat()}&date_to={day.isoformat()}")[0] == both
    assert _hits(client, f"date_to={(day - timedelta(days=1)).isoformat()}")[0] == set()


def test_found_instance_opens_history_and_diagram(two_requests, login):
    _tj_instance, qd_instance, _tj, qd = two_requests
    client = login("hq_auditor")
    _ids, text = _hits(client, f"account_no={qd.account_no}")
    assert f'href="/processes/instances/{qd_instance.id}"' in text
    page = client.get(f"/processes/instances/{qd_instance.id}")
    assert page.status_code == 200
    assert "审计链校验通过" in page.get_data(as_text=True)
    diagram = client.get(f"/processes/instances/{qd_instance.id}/diagram").get_json()
    assert diagram["ok"] and diagram["current"]


def test_default_lists_recent_instances_paged(two_requests, make_account, login):
    tj_instance, qd_instance, _tj, _qd = two_requests
    third = make_account("TJ", "70.00")
    assert start_request(login("tj_clerk"), third.id).status_code in (302, 303)
    newest = instance_of(third.id, "suspension")
    client = login("hq_auditor")

    ids, text = _hits(client, "")
    assert ids == {tj_instance.id, qd_instance.id, newest.id}
    assert "最近发起的流程" in text
    first_row = text.split('data-instance="')[1].split('"')[0]
    assert int(first_row) == newest.id
    assert "<th>发起人</th>" in text
    assert 'id="audit-next-page"' not in text

    rows, cursor = search_instances(parse_filters({}), page_size=2)
    assert [row["instance"].id for row in rows] == [newest.id, qd_instance.id]
    assert cursor
    rows, cursor = search_instances(parse_filters({"after": cursor}), page_size=2)
    assert [row["instance"].id for row in rows] == [tj_instance.id]
    assert cursor == ""


def test_next_page_link_keeps_filters(two_requests, login, monkeypatch):
    tj_instance, qd_instance, _tj, _qd = two_requests
    monkeypatch.setattr("app.hq.audit.PAGE_SIZE", 1)
    client = login("hq_auditor")
    ids, text = _hits(client, "process_type=suspension")
    assert ids == {qd_instance.id}
    assert "本页 1 条" in text
    link = text.split('id="audit-next-page" href="')[1].split('"')[0].replace("&amp;", "&")
    assert "process_type=suspension" in link
    second = client.get(link).get_data(as_text=True)
    assert 'data-instance="%d"' % tj_instance.id in second
    assert 'id="audit-next-page"' not in second


@pytest.mark.parametrize("query, message", [
    ("date_from=2026-02-30", "开始日期「2026-02-30」无效"),
    ("process_type=nope", "流程类型「nope」不存在"),
    ("date_from=2026-03-02&date_to=2026-03-01", "开始日期晚于结束日期"),
    ("date_from=0001-01-01", "开始日期「0001-01-01」超出范围"),
    ("date_to=9999-12-31", "结束日期「9999-12-31」超出范围"),
    ("after=not-a-cursor", "分页参数无效"),
])
def test_bad_filter_is_named(demo, login, query, message):
    response = login("hq_auditor").get(f"/hq/audit?{query}")
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_process_view_counts_done_and_open_steps(two_requests, login):
    tj_instance, _qd_instance, _tj, _qd = two_requests
    task = open_task(tj_instance.id, "company_approval")
    assert submit_task(login("tj_approver"), task.id, {"decision": "approve"}).status_code == 302
    client = login("hq_auditor")
    rows = client.get("/hq/dashboard/processes.json").get_json()["rows"]
    tj_step = next(r for r in rows if r["code"] == "TJ" and r["step"] == task.title)
    assert tj_step["completed"] == 1
    assert tj_step["mean_wait_hours"] is not None
    qd_step = next(r for r in rows if r["code"] == "QD" and r["step"] == task.title)
    assert qd_step["open"] == 1
    assert qd_step["completed"] == 0
    yesterday = (today() - timedelta(days=1)).isoformat()
    assert client.get(f"/hq/dashboard/processes.json?as_of={yesterday}").get_json()["rows"] == []

    incremental = db.session.execute(sa.select(StepDailyTotal.company_id, StepDailyTotal.task_spec_name, StepDailyTotal.day,
                                               StepDailyTotal.completed, StepDailyTotal.wait_seconds)).all()
    assert len(incremental) >= 1
    rebuild_step_totals(db.session.connection())
    db.session.commit()
    rebuilt = db.session.execute(sa.select(StepDailyTotal.company_id, StepDailyTotal.task_spec_name, StepDailyTotal.day,
                                           StepDailyTotal.completed, StepDailyTotal.wait_seconds)).all()
    assert sorted(rebuilt) == sorted(incremental)

"""The 减免 process end to end: finance review, escalation by share and category, send-back and rejection."""

from decimal import Decimal

import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import season_receivable
from app.extensions import db
from app.processes.models import ProcessEvent
from app.tariffs.services import get_season
from tests.processes.conftest import SEASON, flashed, instance_of, open_task, start_process_request, submit_task


def _receivable(account):
    return season_receivable(account.id, get_season(account.company_id, SEASON).id)


def _waiver_lines(account):
    return db.session.scalars(
        sa.select(LedgerEntry).where(LedgerEntry.account_id == account.id, LedgerEntry.kind == "waiver")
    ).all()


def _request(client, account, **values):
    data = {"category": "hardship", "mode": "amount", "amount": "", "percent": "", "evidence": "困难证明 2025-018", "comment": ""}
    data.update(values)
    return start_process_request(client, "waiver", account.id, data)


def test_waiver_within_policy_posts_negative_line(demo, make_account, login):
    # TJ 87.35 m² × 25.00 = 2183.75; 200.00 is 9.16 % of it and below 1000, so the company decides.
    account = make_account("TJ", "87.35")
    assert _receivable(account) == Decimal("2183.75")
    response = _request(login("tj_clerk"), account, amount="200.00")
    assert response.status_code == 302
    instance = instance_of(account.id, "waiver")
    assert instance.status == "running"

    task_page = login("tj_approver")
    assert submit_task(task_page, open_task(instance.id, "company_approval").id, {"decision": "approve"}).status_code == 302
    assert _receivable(account) == Decimal("2183.75")
    finance_task = open_task(instance.id, "finance_review")
    assert finance_task.lane_role == "finance"
    assert task_page.post(f"/processes/tasks/{finance_task.id}/claim").status_code == 403
    finance = login("tj_finance")
    finance.post(f"/processes/tasks/{finance_task.id}/claim")
    text = finance.get(f"/processes/tasks/{finance_task.id}").get_data(as_text=True)
    assert "减免后应收" in text
    assert "1983.75" in text
    assert "退回重审" in text
    assert finance.post(f"/processes/tasks/{finance_task.id}", data={"decision": "approve", "comment": "复核无误"}).status_code == 302

    db.session.expire_all()
    assert instance_of(account.id, "waiver").status == "completed"
    assert _receivable(account) == Decimal("1983.75")
    [line] = _waiver_lines(account)
    assert line.amount == Decimal("-200.00")
    assert line.idempotency_key == f"waiver:{instance.id}"
    assert line.cause_id == instance.id
    events = db.session.scalars(sa.select(ProcessEvent.event_type).where(ProcessEvent.instance_id == instance.id)).all()
    assert "escalated" not in events


def test_waiver_by_percent_escalates_and_sends_back(demo, make_account, login):
    # 40 % of 2183.75 = 873.50: below 1000 yuan but above the 30 % share, so the group decides.
    account = make_account("TJ", "87.35")
    _request(login("tj_clerk"), account, mode="percent", percent="40")
    instance = instance_of(account.id, "waiver")
    approver, finance, group = login("tj_approver"), login("tj_finance"), login("hq_approver")

    submit_task(approver, open_task(instance.id, "company_approval").id, {"decision": "approve"})
    finance_task = open_task(instance.id, "finance_review")
    response = submit_task(finance, finance_task.id, {"decision": "send_back", "comment": ""})
    assert response.status_code == 400
    assert "退回时必须填写意见" in response.get_data(as_text=True)
    response = finance.post(f"/processes/tasks/{finance_task.id}", data={"decision": "send_back", "comment": "请补充低保证明"})
    assert response.status_code == 302

    second_company_task = open_task(instance.id, "company_approval")
    assert second_company_task is not None
    submit_task(approver, second_company_task.id, {"decision": "approve", "comment": "已补充"})
    submit_task(finance, open_task(instance.id, "finance_review").id, {"decision": "approve"})
    group_task = open_task(instance.id, "group_approval")
    assert group_task is not None
    assert _receivable(account) == Decimal("2183.75")
    escalated = db.session.scalar(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "escalated")
    )
    assert escalated.comment == "减免金额占应收 40.00%，超过 30%，需集团审批。"

    assert submit_task(group, group_task.id, {"decision": "approve", "comment": "集团同意"}).status_code == 302
    db.session.expire_all()
    assert _receivable(account) == Decimal("1310.25")
    assert [line.amount for line in _waiver_lines(account)] == [Decimal("-873.50")]


def test_waiver_category_outside_policy_escalates(demo, make_account, login):
    account = make_account("TJ", "87.35")
    _request(login("tj_clerk"), account, category="other", amount="50.00", comment="其他原因")
    instance = instance_of(account.id, "waiver")
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    submit_task(login("tj_finance"), open_task(instance.id, "finance_review").id, {"decision": "approve"})
    assert open_task(instance.id, "group_approval") is not None
    escalated = db.session.scalar(
        sa.select(ProcessEvent.comment).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "escalated")
    )
    assert escalated == "减免类别「其他」不在本公司减免政策内，需集团审批。"


def test_waiver_rejection_leaves_receivable(demo, make_account, login):
    account = make_account("TJ", "87.35")
    _request(login("tj_clerk"), account, amount="1200.00")
    instance = instance_of(account.id, "waiver")
    submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"})
    submit_task(login("tj_finance"), open_task(instance.id, "finance_review").id, {"decision": "approve"})
    response = submit_task(login("hq_approver"), open_task(instance.id, "group_approval").id,
                           {"decision": "reject", "comment": "证明不足"})
    assert response.status_code == 302
    db.session.expire_all()
    assert instance_of(account.id, "waiver").status == "rejected"
    assert _receivable(account) == Decimal("2183.75")
    assert _waiver_lines(account) == []


def test_waiver_start_rejects_bad_input(demo, make_account, login):
    clerk = login("tj_clerk")
    account = make_account("TJ", "87.35")
    cases = [
        ({"amount": "2183.76"}, "减免金额 2183.76 元超过该户 2025-2026 应收 2183.75 元"),
        ({"amount": "12.345"}, "减免金额（元）「12.345」最多 2 位小数"),
        ({"amount": "abc"}, "减免金额（元）「abc」不是有效的数字"),
        ({"amount": "-5"}, "减免金额（元）必须大于 0"),
        ({"amount": ""}, "按金额减免时请填写减免金额"),
        ({"mode": "percent", "percent": "120"}, "超过上限 100 %"),
        ({"amount": "10", "evidence": ""}, "请填写证明材料"),
        ({"amount": "10", "category": "bribe"}, "请选择减免类别"),
    ]
    for values, message in cases:
        response = _request(clerk, account, **values)
        assert response.status_code == 400, values
        assert message in flashed(clerk, response), values
    assert instance_of(account.id, "waiver") is None


def test_rejected_waiver_form_keeps_input(demo, make_account, login):
    clerk = login("tj_clerk")
    account = make_account("TJ", "87.35")

    response = _request(clerk, account, amount="2183.76", evidence="低保证明 津南2025-0415",
                        comment="户主住院三个月，家属代为申请")
    body = response.get_data(as_text=True)

    assert response.status_code == 400
    assert "减免金额 2183.76 元超过该户 2025-2026 应收 2183.75 元" in body
    assert 'value="2183.76"' in body
    assert "低保证明 津南2025-0415" in body
    assert "户主住院三个月，家属代为申请" in body
    assert '<details class="process-start" open>' in body
    assert instance_of(account.id, "waiver") is None


def test_invalid_waiver_form_keeps_input(demo, make_account, login):
    clerk = login("tj_clerk")
    account = make_account("TJ", "87.35")

    response = _request(clerk, account, amount="12.345", evidence="残疾证 津南2025-0416", comment="材料原件稍后补交")
    body = response.get_data(as_text=True)

    assert response.status_code == 400
    assert "减免金额（元）「12.345」最多 2 位小数" in body
    assert 'value="12.345"' in body
    assert "残疾证 津南2025-0416" in body
    assert "材料原件稍后补交" in body
    assert instance_of(account.id, "waiver") is None

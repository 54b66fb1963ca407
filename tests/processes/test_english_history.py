"""History entries that the platform writes, shown in the reader's language on the instance page and in the API."""

import re

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from app.extensions import db
from app.locking import lock_row
from app.network.models import Account
from app.org.models import User
from app.payments.services import collect_payment
from app.processes.deployment import BPMN_DIR, deploy_model
from app.processes.migration import migrate_instances
from app.processes.engine import RunContext
from app.processes.models import PROCESS_TYPES, ProcessEvent, ProcessInstance
from app.processes.operators import check_arrears
from tests.processes.conftest import fire_timer_of, instance_of, open_task, start_process_request, start_request, submit_task, user

SUSPENSION = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")


def _set_locale(username, locale):
    db.session.execute(sa.update(User).where(User.username == username).values(locale=locale))
    db.session.commit()


def _page_task_names(client, instance_id):
    """Return the step names of the history table on the instance page, by shown event type."""
    html = client.get(f"/processes/instances/{instance_id}").get_data(as_text=True)
    body = html.split('<table class="process-events', 1)[1].split("</table>", 1)[0]
    names = {}
    for row in body.split("<tr>")[2:]:
        cells = [re.sub(r"<[^>]+>", "", cell.split(">", 1)[1]).strip() for cell in row.split("<td")[1:]]
        names.setdefault(cells[3], []).append(cells[2])
    return names


def _api_events(client, instance_id):
    response = client.get(f"/api/v1/instances/{instance_id}")
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _stored(instance_id, event_type):
    return db.session.scalars(
        sa.select(ProcessEvent.task_name).filter_by(instance_id=instance_id, event_type=event_type).order_by(ProcessEvent.seq)
    ).all()


EXPECTED = {
    "en": {
        "start": "Suspension request", "migrated": "Version 1 → 2", "suspended": "Suspend process",
        "terminated": "Terminate process", "status": "Terminated",
        "started type": "Request filed", "migrated type": "Version migrated",
    },
    "zh_CN": {
        "start": "报停申请", "migrated": "版本 1 → 2", "suspended": "挂起流程",
        "terminated": "终止流程", "status": "已终止",
        "started type": "发起申请", "migrated type": "迁移版本",
    },
}


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_start_migration_and_admin_entries(demo, make_account, login, locale):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    # Version 2 only renames a step, so the running instance can move to it.
    deploy_model(demo["TJ"].id, "suspension", SUSPENSION.replace('name="分公司审批"', 'name="分公司审核"'))
    db.session.commit()
    results = migrate_instances(demo["TJ"].id, "suspension", 1, 2, user("tj_admin"), "环节调整")
    assert [result.migrated for result in results] == [True]
    admin = login("tj_admin")
    for action in ("suspend", "terminate"):
        response = admin.post(f"/processes/instances/{instance.id}/{action}", data={"reason": "重复申请"})
        assert response.status_code in (302, 303)
    _set_locale("tj_admin", locale)
    admin = login("tj_admin")
    expected = EXPECTED[locale]

    page = _page_task_names(admin, instance.id)
    api = _api_events(admin, instance.id)

    assert page[expected["started type"]] == [expected["start"]]
    assert page[expected["migrated type"]] == [expected["migrated"]]
    api_names = {event["event_type"]: event["task_name"] for event in api["events"]}
    assert api_names["started"] == expected["start"]
    assert api_names["migrated"] == expected["migrated"]
    assert api_names["suspended"] == expected["suspended"]
    assert api_names["terminated"] == expected["terminated"]
    assert api["status_label"] == expected["status"]
    # The stored texts stay Chinese, because the audit hash covers them.
    assert _stored(instance.id, "started") == ["报停申请"]
    assert _stored(instance.id, "migrated") == ["版本 1 → 2"]
    assert _stored(instance.id, "terminated") == ["终止流程"]


@pytest.mark.parametrize("locale, outcome, start", [("en", "Completed", "Waiver request"), ("zh_CN", "已完成", "减免申请")])
def test_finished_entry_shows_outcome(demo, make_account, login, locale, outcome, start):
    account = make_account("TJ", "87.35")
    data = {"category": "hardship", "mode": "amount", "amount": "200.00", "percent": "", "evidence": "困难证明 2025-018", "comment": ""}
    assert start_process_request(login("tj_clerk"), "waiver", account.id, data).status_code == 302
    instance = instance_of(account.id, "waiver")
    assert submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"}).status_code == 302
    finance = login("tj_finance")
    assert submit_task(finance, open_task(instance.id, "finance_review").id, {"decision": "approve", "comment": ""}).status_code == 302
    _set_locale("tj_admin", locale)
    admin = login("tj_admin")

    api = _api_events(admin, instance.id)
    html = admin.get(f"/processes/instances/{instance.id}").get_data(as_text=True)

    finished = [event for event in api["events"] if event["event_type"] == "finished"]
    assert [event["task_name"] for event in finished] == [outcome]
    assert api["status_label"] == outcome
    assert [event["task_name"] for event in api["events"] if event["event_type"] == "started"] == [start]
    step_label = "Step" if locale == "en" else "环节"
    assert f'<td data-label="{step_label}">{outcome}</td>' in html
    assert f'<td data-label="{step_label}">{start}</td>' in html
    assert _stored(instance.id, "finished") == ["已完成"]


START_NAMES = {
    "suspension": "Suspension request", "waiver": "Waiver request", "forced_shutoff": "Forced shutoff request",
    "area_adjustment": "Area adjustment request", "reheating": "Reheating request", "connection": "Network connection request",
    "back_charge": "Inspection back-charge request",
}


@pytest.mark.parametrize("process_type", sorted(PROCESS_TYPES))
def test_start_entry_of_every_process(app_ctx, process_type):
    event = ProcessEvent(event_type="started", task_name=f"{PROCESS_TYPES[process_type]}申请", data={})

    with force_locale("en"):
        english = event.shown_task_name
    with force_locale("zh_CN"):
        chinese = event.shown_task_name

    assert english == START_NAMES[process_type]
    assert chinese == f"{PROCESS_TYPES[process_type]}申请"


SETTLED = {
    "en": (
        "The account's arrears are paid, so the forced shutoff process was cancelled automatically.",
        "The account's arrears are paid, so the forced shutoff process was cancelled automatically; no further action is needed.",
    ),
    "zh_CN": ("该户欠费已结清，强停流程自动取消。", "该户欠费已结清，强停流程已自动取消，无需继续办理。"),
}


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_settled_shutoff_cancel_comments(demo, make_account, login, locale):
    # TJ residential price: 87.35 ㎡ × 25.00 = 2183.75 owed.
    cashier = user("tj_cashier")
    clerk = login("tj_clerk")
    # Paid while waiting after the notice. Firing the timer would cancel the instance before
    # the diagram's arrears check runs, so the check's service runs here as the engine calls it.
    by_check = make_account("TJ", "87.35")
    assert start_process_request(clerk, "forced_shutoff", by_check.id, {"comment": ""}).status_code == 302
    checked = instance_of(by_check.id, "forced_shutoff")
    collect_payment(db.session.get(Account, by_check.id), "2183.75", "cash", cashier)
    db.session.commit()
    result = check_arrears(RunContext(lock_row(ProcessInstance, checked.id)), by_check.id)
    db.session.commit()
    assert result["arrears_paid"] is True
    # Paid before the notice is served: claiming the task cancels the instance.
    by_claim = make_account("TJ", "87.35")
    assert start_process_request(clerk, "forced_shutoff", by_claim.id, {"comment": ""}).status_code == 302
    claimed = instance_of(by_claim.id, "forced_shutoff")
    collect_payment(db.session.get(Account, by_claim.id), "2183.75", "cash", cashier)
    db.session.commit()
    clerk.post(f"/processes/tasks/{open_task(claimed.id, 'notice').id}/claim")
    assert instance_of(by_claim.id, "forced_shutoff").status == "cancelled"
    _set_locale("tj_admin", locale)
    admin = login("tj_admin")
    check_text, claim_text = SETTLED[locale]

    check_events = _api_events(admin, checked.id)["events"]
    claim_events = _api_events(admin, claimed.id)["events"]
    html = admin.get(f"/processes/instances/{checked.id}").get_data(as_text=True)

    assert [event["comment"] for event in check_events if event["event_type"] == "cancelled"] == [check_text]
    assert [event["comment"] for event in claim_events if event["event_type"] == "cancelled"] == [claim_text]
    assert check_text.replace("'", "&#39;") in html
    stored = db.session.scalars(
        sa.select(ProcessEvent.comment).filter_by(event_type="cancelled").order_by(ProcessEvent.instance_id)
    ).all()
    assert stored == [SETTLED["zh_CN"][0], SETTLED["zh_CN"][1]]

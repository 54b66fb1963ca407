"""Ledger memos, process step names and diagram labels in the reader's language, on the account, inbox and instance pages."""

import re
import xml.etree.ElementTree as ET
from datetime import date

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from flask_babel import force_locale

from app.extensions import db
from app.org.models import Role, User
from app.payments.services import collect_payment
from app.processes.deployment import BPMN_DIR, deploy_model
from app.processes.design import with_reader_labels
from app.processes.engine import KNOWN_LANES
from app.processes.models import PROCESS_TYPES
from app.processes.step_names import DIAGRAM_FLOW_NAMES, DIAGRAM_STEP_NAMES
from app.tariffs.services import get_season
from tests.billing.conftest import add_account  # noqa: F401
from tests.processes.conftest import SEASON, instance_of, open_task, start_process_request, start_request, submit_task, user

BPMN_NS = "{http://www.omg.org/spec/BPMN/20100524/MODEL}"
# Named BPMN elements that are no steps: their names are process labels, roles or flow labels.
NOT_STEPS = {"sequenceFlow", "lane", "participant", "process"}


def _set_locale(username, locale):
    db.session.execute(sa.update(User).where(User.username == username).values(locale=locale))
    db.session.commit()


def _statement_memos(client, account):
    html = client.get(f"/accounts/{account.id}").get_data(as_text=True)
    body = html.split('<table id="statement"', 1)[1].split("</table>", 1)[0]
    return [re.sub(r"<[^>]+>", "", row.rsplit("<td", 1)[1].split(">", 1)[1]).strip() for row in body.split("<tr>")[2:]]


def _approved_waiver(login, make_account, amount="200.00"):
    """A TJ waiver of `amount` approved by the company and by finance, which posts its line."""
    account = make_account("TJ", "87.35")
    data = {"category": "hardship", "mode": "amount", "amount": amount, "percent": "", "evidence": "困难证明 2025-018", "comment": ""}
    assert start_process_request(login("tj_clerk"), "waiver", account.id, data).status_code == 302
    instance = instance_of(account.id, "waiver")
    assert submit_task(login("tj_approver"), open_task(instance.id, "company_approval").id, {"decision": "approve"}).status_code == 302
    finance = login("tj_finance")
    assert submit_task(finance, open_task(instance.id, "finance_review").id, {"decision": "approve", "comment": ""}).status_code == 302
    return account, instance


def _default_names(kinds):
    """Return the names of the BPMN elements of the given kinds (local tag names) in the diagrams in bpmn/."""
    names = set()
    for path in sorted(BPMN_DIR.glob("*.bpmn")):
        for element in ET.parse(path).iter():
            if element.tag.startswith(BPMN_NS) and element.get("name") and element.tag[len(BPMN_NS):] in kinds:
                names.add(element.get("name"))
    return names


def _all_kinds():
    return {element.tag[len(BPMN_NS):] for path in BPMN_DIR.glob("*.bpmn") for element in ET.parse(path).iter() if element.tag.startswith(BPMN_NS)}


def test_default_step_names_match_diagrams():
    assert set(DIAGRAM_STEP_NAMES) == _default_names(_all_kinds() - NOT_STEPS)


def test_default_diagram_labels_have_entries():
    assert set(DIAGRAM_FLOW_NAMES) == _default_names({"sequenceFlow"})
    assert _default_names({"participant", "process"}) <= {str(label) for label in PROCESS_TYPES.values()}
    assert _default_names({"lane"}) <= KNOWN_LANES
    # The viewer translates names only, so a default diagram must not carry annotation text.
    assert "textAnnotation" not in _all_kinds()


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_statement_memos_follow_reader_language(demo, make_account, login, locale):
    # The finance approver reads English, so the waiver line is posted inside an English request.
    _set_locale("tj_finance", "en")
    account, instance = _approved_waiver(login, make_account)
    payment = collect_payment(account, "100.00", "cash", user("tj_cashier"))
    db.session.commit()
    _set_locale("tj_clerk", locale)

    memos = _statement_memos(login("tj_clerk"), account)

    if locale == "en":
        assert f"Waiver approved (process {instance.id})" in memos
        assert f"Receipt {payment.receipt_no}" in memos
    else:
        assert f"减免审批通过（流程 {instance.id}）" in memos
        assert f"收据 {payment.receipt_no}" in memos
    # The stored memo is Chinese whatever the language of the request that posted it.
    stored = db.session.scalars(sa.select(LedgerEntry.memo).where(LedgerEntry.account_id == account.id).order_by(LedgerEntry.id)).all()
    assert f"减免审批通过（流程 {instance.id}）" in stored
    assert f"收据 {payment.receipt_no}" in stored


@pytest.mark.parametrize("locale", ["en", "zh_CN"])
def test_prorated_charge_memo_follows_reader_language(demo, add_account, login, locale):
    account = add_account("TJ", "80", connected_on=date(2026, 1, 10))
    run_billing("TJ", SEASON)
    season = get_season(account.company_id, SEASON)
    days = (season.end_on - date(2026, 1, 10)).days + 1
    _set_locale("tj_clerk", locale)

    memos = _statement_memos(login("tj_clerk"), account)

    if locale == "en":
        assert memos == [f"2026-01-10 to {season.end_on}: {days} of {season.statutory_days} statutory days"]
    else:
        assert memos == [f"2026-01-10至{season.end_on} 共{days}天/法定{season.statutory_days}天"]


@pytest.mark.parametrize("locale, company_step", [("en", "Company approval"), ("zh_CN", "分公司审批")])
def test_inbox_and_history_step_names(demo, make_account, login, locale, company_step):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    _set_locale("tj_approver", locale)
    approver = login("tj_approver")

    inbox = approver.get("/processes/inbox").get_data(as_text=True)
    history = approver.get(f"/processes/instances/{instance.id}").get_data(as_text=True)

    assert f">{company_step}</a>" in inbox
    step_label = "Step" if locale == "en" else "环节"
    assert f'<td data-label="{step_label}">{company_step}</td>' in history


def test_company_step_name_shown_as_written(demo, make_account, login):
    # TJ renames its company approval step in its own diagram.
    text = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8").replace('name="分公司审批"', 'name="片区经理审批"')
    deploy_model(demo["TJ"].id, "suspension", text)
    db.session.commit()
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    _set_locale("tj_approver", "en")

    inbox = login("tj_approver").get("/processes/inbox").get_data(as_text=True)

    assert ">片区经理审批</a>" in inbox
    assert "Company approval" not in inbox


def _names_by_id(xml):
    root = ET.fromstring(xml)
    return {element.get("id"): element.get("name") for element in root.iter() if element.tag.startswith(BPMN_NS) and element.get("name")}


def _renamed_suspension():
    """The default suspension diagram with one step and one flow renamed by a company, as stored in its version."""
    text = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")
    text = text.replace('name="分公司审批"', 'name="片区经理审批"')
    return text.replace('id="flow_company_rejected" name="驳回"', 'id="flow_company_rejected" name="不予报停"')


def test_viewer_copy_english_keeps_company_names(demo, app):
    stored = _renamed_suspension()
    db.session.execute(sa.update(Role).where(Role.company_id == demo["TJ"].id, Role.code == "field_staff").values(name="抄表外勤"))
    db.session.commit()

    with app.test_request_context(), force_locale("en"):
        names = _names_by_id(with_reader_labels(stored, demo["TJ"].id))

    # The company's own names are data.
    assert names["company_approval"] == "片区经理审批"
    assert names["flow_company_rejected"] == "不予报停"
    # Steps, gateways, events and flows of the default diagram.
    assert names["start_request"] == "Clerk accepts the suspension request"
    assert names["company_decision_gateway"] == "Company decision"
    assert names["cancel_company_approval_deadline"] == "Not decided by the deadline"
    assert names["remind_company_approval"] == "Company approval overdue reminder"
    assert names["end_done"] == "Suspension completed"
    assert names["group_approval"] == "Group approval"
    assert names["flow_group_rejected"] == "Rejected"
    assert names["flow_company_approved"] == "Approved"
    assert names["flow_company_escalate"] == "Approved, group approval needed"
    assert names["flow_escalate_company_approval_timeout"] == "Overdue"
    assert names["flow_company_sent_back"] == "Sent back for documents"
    assert names["suspension_participant"] == "Suspension"
    # A role TJ renamed is data. Roles still named as seeded show the translated default name,
    # and the group lane has no TJ role, so its label is translated.
    assert names["lane_field_staff"] == "抄表外勤"
    assert names["lane_clerk"] == "Clerk"
    assert names["lane_company_approver"] == "Company approver"
    assert names["lane_group_approver"] == "Group approver"
    # Nothing else is left in Chinese.
    company_names = {"片区经理审批", "不予报停", "抄表外勤"}
    assert [name for name in names.values() if re.search(r"[\u4e00-\u9fff]", name) and name not in company_names] == []


def test_viewer_copy_chinese_changes_only_lanes(demo, app):
    stored = _renamed_suspension()

    with app.test_request_context(), force_locale("zh_CN"):
        shown = with_reader_labels(stored, demo["TJ"].id)

    before, after = _names_by_id(stored), _names_by_id(shown)
    assert after.keys() == before.keys()
    lanes = {"lane_clerk", "lane_company_approver", "lane_group_approver", "lane_field_staff"}
    assert {key: after[key] for key in before if key not in lanes} == {key: before[key] for key in before if key not in lanes}
    assert after["lane_group_approver"] == "集团审批人"

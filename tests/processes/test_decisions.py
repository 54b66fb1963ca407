"""Escalation decision tables: template equivalence, input boundaries, per-company versions, endpoints and pinning."""

import re
from decimal import Decimal
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from app.demo import install_demo
from app.extensions import db
from app.org.audit import AuthEvent
from app.processes.decisions import current_decision
from app.processes.dmn import check_table, read_settings, settings_copy, template_xml
from app.processes.engine import ModelValidationError, evaluate_decision, validate_model
from app.processes.escalation import DEFAULT_RULES, RULE_COLUMNS
from app.processes.models import PROCESS_TYPES, DecisionVersion, ProcessEvent
from app.processes.deployment import BPMN_DIR
from tests.processes.conftest import instance_of, open_task, start_process_request, start_request, submit_task

NOTHING = "未达到集团审批条件，由分公司审批。"


def _default_rule(process_type):
    values = {column: None for column in RULE_COLUMNS}
    values.update(escalate_non_residential=False, escalate_low_income=False, policy_categories="")
    values.update(DEFAULT_RULES.get(process_type, {}))
    return SimpleNamespace(process_type=process_type, **values)


def _decide(process_type, **data):
    facts = {"user_type": "residential", "building_area": Decimal("80.00"), **data}
    result = evaluate_decision(f"{process_type}_escalation", template_xml(process_type), facts)
    return result["escalate"], result["escalation_reason"]


def _escalation_comment(instance):
    return db.session.scalar(
        sa.select(ProcessEvent.comment).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "escalated")
    )


@pytest.mark.parametrize("process_type", list(PROCESS_TYPES))
def test_template_is_default_settings_copy(process_type):
    template = template_xml(process_type)
    assert check_table(process_type, template) == []
    assert settings_copy(process_type, _default_rule(process_type)) == template
    settings = read_settings(template, process_type)
    for column, value in DEFAULT_RULES.get(process_type, {}).items():
        expected = value if column != "escalate_low_income" or value else False
        assert settings[column] == expected, column


@pytest.mark.parametrize(("area", "escalate"), [("199.99", False), ("200", False), ("200.01", True)])
def test_suspension_area_boundary(area, escalate):
    decided, reason = _decide("suspension", building_area=Decimal(area))
    assert decided is escalate
    assert reason == (f"建筑面积 {area} ㎡ 超过 200 ㎡，需集团审批。" if escalate else NOTHING)


@pytest.mark.parametrize(("area", "escalate"), [("299.99", False), ("300.00", False), ("300.01", True)])
def test_connection_surveyed_area_boundary(area, escalate):
    decided, reason = _decide("connection", surveyed_area=Decimal(area), applied_area=Decimal("80"))
    assert decided is escalate
    assert reason == (f"入网面积 {area} ㎡ 超过 300 ㎡，需集团审批。" if escalate else NOTHING)


def _waiver(amount, receivable="100000.00", category="hardship", label="困难救助"):
    return _decide(
        "waiver", waiver_amount=Decimal(amount), receivable_at_start=Decimal(receivable),
        waiver_category=category, waiver_category_label=label,
    )


@pytest.mark.parametrize(("amount", "escalate"), [("999.99", False), ("1000.00", False), ("1000.01", True)])
def test_waiver_amount_boundary(amount, escalate):
    # Against 100000.00 receivable the share stays near 1 %, far below 30 %.
    decided, reason = _waiver(amount)
    assert decided is escalate
    assert reason == (f"减免金额 {amount} 元超过 1000.00 元，需集团审批。" if escalate else NOTHING)


@pytest.mark.parametrize(("amount", "escalate"), [("299.99", False), ("300.00", False), ("300.01", True)])
def test_waiver_share_boundary(amount, escalate):
    # 300.00 of 1000.00 is exactly 30 %; 300.01 is 30.001 %, shown rounded to 30.00 %.
    decided, reason = _waiver(amount, receivable="1000.00")
    assert decided is escalate
    assert reason == ("减免金额占应收 30.00%，超过 30%，需集团审批。" if escalate else NOTHING)


def test_waiver_category_outside_policy():
    assert _waiver("10.00", category="hardship") == (False, NOTHING)
    assert _waiver("10.00", category="other", label="其他") == (True, "减免类别「其他」不在本公司减免政策内，需集团审批。")


@pytest.mark.parametrize(("arrears", "escalate"), [("9999.99", False), ("10000.00", False), ("10000.01", True)])
def test_shutoff_arrears_boundary(arrears, escalate):
    decided, reason = _decide("forced_shutoff", arrears=Decimal(arrears), arrears_now=Decimal(arrears))
    assert decided is escalate
    assert reason == (f"欠费 {arrears} 元超过 10000.00 元，需集团审批。" if escalate else NOTHING)


def test_shutoff_low_income_household():
    assert _decide("forced_shutoff", user_type="low_income", arrears=Decimal("50"), arrears_now=Decimal("50")) == (
        True, "低保户强停需集团审批。",
    )


@pytest.mark.parametrize(("new_area", "escalate"), [("190.01", False), ("190.00", False), ("189.99", True)])
def test_area_decrease_m2_boundary(new_area, escalate):
    # From 200 m² a decrease of 10 m² is 5 %, so only the m² rule can match.
    decided, reason = _decide("area_adjustment", old_area=Decimal("200.00"), new_area=Decimal(new_area))
    assert decided is escalate
    assert reason == ("面积减少 10.01 ㎡，超过 10 ㎡，需集团审批。" if escalate else NOTHING)


@pytest.mark.parametrize(("new_area", "escalate"), [("45.01", False), ("45.00", False), ("44.99", True)])
def test_area_decrease_percent_boundary(new_area, escalate):
    # From 50 m² a decrease of 5 m² is exactly 10 %; 5.01 m² is 10.02 % and still below 10 m².
    decided, reason = _decide("area_adjustment", old_area=Decimal("50.00"), new_area=Decimal(new_area))
    assert decided is escalate
    assert reason == ("面积减少 10.02%，超过 10%，需集团审批。" if escalate else NOTHING)


def test_area_increase_never_escalates():
    assert _decide("area_adjustment", old_area=Decimal("50.00"), new_area=Decimal("500.00")) == (False, NOTHING)


def test_reheating_template_has_no_rules():
    assert _decide("reheating", user_type="non_residential") == (False, NOTHING)


def test_demo_installs_version_one_per_company(demo):
    install_demo()
    versions = db.session.scalars(sa.select(DecisionVersion)).all()
    assert len(versions) == 4 * len(PROCESS_TYPES)
    assert {(v.version, v.status) for v in versions} == {(1, "published")}
    tj_suspension = current_decision(demo["TJ"].id, "suspension_escalation")
    assert tj_suspension.dmn_xml == template_xml("suspension")


def _tj_suspension_xml(threshold):
    return template_xml("suspension").replace("&gt; 200", f"&gt; {threshold}").replace("超过 200 ㎡", f"超过 {threshold} ㎡")


def test_tj_table_change_affects_only_tj(demo, make_account, login):
    admin = login("tj_admin")
    response = admin.post("/processes/decisions/suspension_escalation", data={"xml": _tj_suspension_xml(100)})
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "version": 2}

    # 150 m² residential: above TJ's new 100 m², below QD's unchanged 200 m².
    tj_account = make_account("TJ", "150.00")
    qd_account = make_account("QD", "150.00")
    assert start_request(login("tj_clerk"), tj_account.id).status_code == 302
    assert start_request(login("qd_clerk"), qd_account.id).status_code == 302
    assert _escalation_comment(instance_of(tj_account.id, "suspension")) == "建筑面积 150 ㎡ 超过 100 ㎡，需集团审批。"
    assert _escalation_comment(instance_of(qd_account.id, "suspension")) is None
    assert instance_of(tj_account.id, "suspension").decision_versions == {"suspension_escalation": 2}
    assert instance_of(qd_account.id, "suspension").decision_versions == {"suspension_escalation": 1}

    db.session.expire_all()
    assert current_decision(demo["QD"].id, "suspension_escalation").version == 1
    # The settings page follows the table: TJ's area threshold now reads 100.
    settings = admin.get("/processes/settings").get_data(as_text=True)
    assert re.search(r'name="area_threshold" value="100"', settings)


def test_invalid_table_rejected_with_rule_id(demo, login):
    admin = login("tj_admin")
    bad = _tj_suspension_xml(100).replace("&gt; 100", "&gt; __import__('os')")
    response = admin.post("/processes/decisions/suspension_escalation", data={"xml": bad})
    assert response.status_code == 400
    body = response.get_json()
    assert body["ok"] is False
    assert [error["element_id"] for error in body["errors"]] == ["rule_area"]
    assert "第 2 条规则" in body["errors"][0]["message"]
    assert "__import__" in body["errors"][0]["message"]

    unknown = _tj_suspension_xml(100).replace("text(building_area)", "text(floor_area)")
    body = admin.post("/processes/decisions/suspension_escalation", data={"xml": unknown}).get_json()
    assert body["errors"][0]["element_id"] == "rule_area"
    assert "未知变量「floor_area」" in body["errors"][0]["message"]

    broken = admin.post("/processes/decisions/suspension_escalation", data={"xml": "<definitions"})
    assert broken.status_code == 400
    assert "不是格式正确的 XML" in broken.get_json()["errors"][0]["message"]
    assert admin.post("/processes/decisions/suspension_escalation", data={}).status_code == 400
    entity = '<!DOCTYPE definitions [<!ENTITY secret SYSTEM "file:///etc/hostname">]>\n' + _tj_suspension_xml(100).split("\n", 1)[1]
    doctype = admin.post("/processes/decisions/suspension_escalation", data={"xml": entity})
    assert doctype.status_code == 400
    assert "DOCTYPE" in doctype.get_json()["errors"][0]["message"]
    assert admin.post("/processes/decisions/no_such_table", data={"xml": bad}).status_code == 404

    db.session.expire_all()
    assert current_decision(demo["TJ"].id, "suspension_escalation").version == 1
    assert db.session.scalar(sa.select(sa.func.count(AuthEvent.id)).where(AuthEvent.event == "decision_changed")) == 0


def test_table_change_writes_audit_entry(demo, login):
    admin = login("tj_admin")
    admin.post("/processes/decisions/suspension_escalation", data={"xml": _tj_suspension_xml(150)})
    # Posting the same text again stores nothing new.
    again = admin.post("/processes/decisions/suspension_escalation", data={"xml": _tj_suspension_xml(150)})
    assert again.get_json() == {"ok": True, "version": 2}
    events = db.session.scalars(sa.select(AuthEvent).where(AuthEvent.event == "decision_changed")).all()
    assert len(events) == 1
    event = events[0]
    assert event.company_id == demo["TJ"].id
    assert event.actor.username == "tj_admin"
    assert event.detail["decision"] == "suspension_escalation"
    assert event.detail["version"] == 2
    assert event.detail["previous_version"] == 1


def test_settings_page_stores_new_table_version(demo, login):
    admin = login("tj_admin")
    response = admin.post("/processes/settings", data={"process_type": "suspension", "escalate_non_residential": "on", "area_threshold": "250"})
    assert response.status_code == 303
    decision = current_decision(demo["TJ"].id, "suspension_escalation")
    assert decision.version == 2
    assert "&gt; 250" in decision.dmn_xml
    assert "超过 250 ㎡" in decision.dmn_xml
    event = db.session.scalar(sa.select(AuthEvent).where(AuthEvent.event == "decision_changed"))
    assert event.detail["version"] == 2


def test_running_instance_keeps_decision_version(demo, make_account, login):
    # 入网 evaluates its table after the survey, so a table saved in between must not apply.
    tj = demo["TJ"]
    clerk, field, admin = login("tj_clerk"), login("tj_field"), login("tj_admin")
    early = make_account("TJ", "0.01", status="not_connected")
    assert start_process_request(clerk, "connection", early.id, {"applied_area": "150.00", "contract_no": "RW-1"}).status_code == 302
    pinned = instance_of(early.id, "connection")

    lowered = template_xml("connection").replace("&gt; 300", "&gt; 100").replace("超过 300 ㎡", "超过 100 ㎡")
    assert admin.post("/processes/decisions/connection_escalation", data={"xml": lowered}).get_json() == {"ok": True, "version": 2}

    later = make_account("TJ", "0.01", status="not_connected")
    assert start_process_request(clerk, "connection", later.id, {"applied_area": "150.00", "contract_no": "RW-2"}).status_code == 302
    newer = instance_of(later.id, "connection")
    for instance in (pinned, newer):
        survey = open_task(instance.id, "survey")
        assert submit_task(field, survey.id, {"surveyed_area": "150.00", "comment": "现场实测"}).status_code == 302

    db.session.expire_all()
    assert pinned.decision_versions == {"connection_escalation": 1}
    assert newer.decision_versions == {"connection_escalation": 2}
    # 150 m² is below version 1's 300 m² and above version 2's 100 m².
    assert _escalation_comment(pinned) is None
    assert _escalation_comment(newer) == "入网面积 150 ㎡ 超过 100 ㎡，需集团审批。"
    assert current_decision(tj.id, "connection_escalation").version == 2
    assert "规则表 connection_escalation 第 1 版" in admin.get(f"/processes/instances/{pinned.id}").get_data(as_text=True)


def test_decision_endpoints_list_and_xml(demo, login):
    admin = login("tj_admin")
    listing = admin.get("/processes/decisions")
    assert listing.status_code == 200
    decisions = {row["decision_id"]: row for row in listing.get_json()["decisions"]}
    assert set(decisions) == {f"{process_type}_escalation" for process_type in PROCESS_TYPES}
    assert decisions["waiver_escalation"]["version"] == 1
    assert decisions["waiver_escalation"]["xml_url"] == "/processes/decisions/waiver_escalation.dmn"

    xml = admin.get("/processes/decisions/waiver_escalation.dmn")
    assert xml.status_code == 200
    assert xml.mimetype == "application/xml"
    assert xml.get_data(as_text=True) == template_xml("waiver")
    assert admin.get("/processes/decisions/nothing.dmn").status_code == 404

    page = admin.get("/processes/decisions/waiver_escalation").get_data(as_text=True)
    assert 'id="rule_percent"' in page
    assert "&gt; 30" in page
    assert "receivable_at_start" in page


def test_decision_endpoints_need_configure_permission(demo, login):
    for username in ("tj_clerk", "tj_approver", "hq_admin", "hq_approver"):
        client = login(username)
        assert client.get("/processes/decisions").status_code == 403, username
        assert client.get("/processes/decisions/suspension_escalation.dmn").status_code == 403, username
        assert client.get("/processes/decisions/suspension_escalation").status_code == 403, username
        response = client.post("/processes/decisions/suspension_escalation", data={"xml": _tj_suspension_xml(1)})
        assert response.status_code == 403, username
        assert response.get_json()["ok"] is False
    assert current_decision(demo["TJ"].id, "suspension_escalation").version == 1


def test_decision_save_requires_csrf_token(demo, login, monkeypatch):
    admin = login("tj_admin")
    monkeypatch.setitem(admin.application.config, "WTF_CSRF_ENABLED", True)
    assert admin.post("/processes/decisions/suspension_escalation", data={"xml": _tj_suspension_xml(150)}).status_code == 400
    token = re.search(r'name="csrf_token" value="([^"]+)"', admin.get("/processes/settings").get_data(as_text=True)).group(1)
    response = admin.post(
        "/processes/decisions/suspension_escalation", data={"xml": _tj_suspension_xml(150)}, headers={"X-CSRFToken": token}
    )
    assert response.get_json() == {"ok": True, "version": 2}


def test_deploy_validation_covers_decision_table():
    diagram = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")
    bad = template_xml("suspension").replace('"非居民用户报停需集团审批"', "reason_text")
    with pytest.raises(ModelValidationError) as caught:
        validate_model(diagram, "suspension", {"suspension_escalation": bad})
    assert [finding.element_id for finding in caught.value.findings] == ["rule_non_residential"]
    missing = diagram.replace(">suspension_escalation<", ">suspension_rules<")
    with pytest.raises(ModelValidationError, match="suspension_rules"):
        validate_model(missing, "suspension", {})


@pytest.mark.parametrize("cell, named", [
    ("&gt; 1/0", "DivisionByZero"),
    ("&gt; \"abc\"", "'>' not supported"),
    ("&gt; Decimal(\"x\")", "Decimal('x')"),
])
def test_cell_failing_on_evaluation_rejected(demo, make_account, login, cell, named):
    admin = login("tj_admin")
    bad = _tj_suspension_xml(100).replace("&gt; 100", cell)

    response = admin.post("/processes/decisions/suspension_escalation", data={"xml": bad})

    assert response.status_code == 400
    errors = response.get_json()["errors"]
    assert [error["element_id"] for error in errors] == ["rule_area"]
    assert "第 2 条规则「建筑面积（㎡）」列的条件" in errors[0]["message"]
    assert "试算" in errors[0]["message"]
    assert named in errors[0]["message"]
    db.session.expire_all()
    assert current_decision(demo["TJ"].id, "suspension_escalation").version == 1
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302


def test_output_failing_on_evaluation_rejected(demo, login):
    bad = _tj_suspension_xml(100).replace("text(building_area)", "text(building_area / 0)")

    response = login("tj_admin").post("/processes/decisions/suspension_escalation", data={"xml": bad})

    assert response.status_code == 400
    errors = response.get_json()["errors"]
    assert [error["element_id"] for error in errors] == ["rule_area"]
    assert "第 2 条规则「原因」列的输出" in errors[0]["message"]


@pytest.mark.parametrize("process_type", list(PROCESS_TYPES))
def test_templates_pass_trial_evaluation(process_type):
    assert check_table(process_type, template_xml(process_type)) == []

"""The designer's endpoints: opening, drafts, per-element validation, deploying versions, templates and instance paths."""

import re

import sqlalchemy as sa

from app.clock import format_local
from app.extensions import db
from app.org.models import Role
from app.processes.deployment import BPMN_DIR, latest_model
from app.processes.models import ProcessDraft, ProcessInstance, ProcessModel, ProcessTemplate
from app.processes.services import start_suspension
from tests.processes.conftest import user

SUSPENSION = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")
DESIGN = "/processes/design/suspension"

# A user task added to the clerk lane between the start event and the escalation check,
# first without a form (the broken change), then with the approval form.
REVIEW_TASK = """    <bpmn:userTask id="clerk_review" name="营业员复核">
      <bpmn:incoming>flow_start_to_review</bpmn:incoming>
      <bpmn:outgoing>flow_start_to_escalation</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:sequenceFlow id="flow_start_to_review" sourceRef="start_request" targetRef="clerk_review" />
"""
REVIEW_FORM = """      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="form" value="approval" />
          <spiffworkflow:property name="data_prefix" value="review" />
        </spiffworkflow:properties>
      </bpmn:extensionElements>
"""


def _with_review_task(form=False):
    xml = SUSPENSION.replace(
        "<bpmn:flowNodeRef>start_request</bpmn:flowNodeRef>",
        "<bpmn:flowNodeRef>start_request</bpmn:flowNodeRef>\n        <bpmn:flowNodeRef>clerk_review</bpmn:flowNodeRef>",
    )
    xml = xml.replace(
        '<bpmn:outgoing>flow_start_to_escalation</bpmn:outgoing>\n    </bpmn:startEvent>',
        '<bpmn:outgoing>flow_start_to_review</bpmn:outgoing>\n    </bpmn:startEvent>\n' + REVIEW_TASK,
    )
    xml = xml.replace('sourceRef="start_request" targetRef="evaluate_escalation_task"', 'sourceRef="clerk_review" targetRef="evaluate_escalation_task"')
    if form:
        xml = xml.replace('<bpmn:userTask id="clerk_review" name="营业员复核">\n', '<bpmn:userTask id="clerk_review" name="营业员复核">\n' + REVIEW_FORM)
    return xml


def _errors(response):
    return {(e["element_id"], e["message"]) for e in response.get_json()["errors"]}


def test_open_shows_published_version(demo, login):
    admin = login("tj_admin")
    page = admin.get(DESIGN)
    assert page.status_code == 200
    assert 'id="designer"' in page.get_data(as_text=True)
    source = admin.get(f"{DESIGN}/source").get_json()
    assert source["origin"] == "published"
    assert source["version"] == 1
    assert source["xml"] == SUSPENSION
    options = source["options"]
    assert "rebill_suspension" in {s["name"] for s in options["services"]}
    assert {"clerk", "company_approver", "finance", "field_staff", "group_approver"} == {lane["value"] for lane in options["lanes"]}
    assert "approval" in {f["value"] for f in options["forms"]}


def test_every_task_form_option_named(demo, login):
    forms = login("tj_admin").get(f"{DESIGN}/source").get_json()["options"]["forms"]
    labels = {f["value"]: f["label"] for f in forms}
    assert labels["supplement"] == "补充材料（supplement）"
    for code, label in labels.items():
        assert label != f"{code}（{code}）", f"form {code} has no name of its own"


CJK = re.compile(r"[\u4e00-\u9fff]")


def _service_options(client):
    return {s["name"]: s for s in client.get(f"{DESIGN}/source").get_json()["options"]["services"]}


def test_service_descriptions_follow_language(demo, login):
    admin = login("tj_admin")
    chinese = _service_options(admin)
    assert chinese["rebill_suspension"]["inputs"] == {"account_id": "流程实例所属账户的 id"}
    assert chinese["mark_valve_closed"]["outputs"] == {"valve_state": "账户的新阀门状态"}
    assert chinese["post_waiver"]["inputs"]["amount"] == "Decimal：减免金额（元）"

    assert admin.post("/language", data={"locale": "en"}).status_code == 302
    english = _service_options(admin)
    assert english["rebill_suspension"]["inputs"] == {"account_id": "id of the instance's account"}
    assert english["mark_valve_closed"]["outputs"] == {"valve_state": "the account's new valve state"}
    assert english["post_waiver"]["inputs"]["amount"] == "Decimal: waiver amount in yuan"
    assert set(english) == set(chinese)
    for name, service in chinese.items():
        for text in [*service["inputs"].values(), *service["outputs"].values()]:
            assert CJK.search(text), (name, text)
    for name, service in english.items():
        for text in [*service["inputs"].values(), *service["outputs"].values()]:
            assert not CJK.search(text), (name, text)


def test_designer_needs_design_permission(demo, login):
    for username in ("tj_clerk", "tj_approver", "hq_auditor"):
        client = login(username)
        assert client.get(DESIGN).status_code == 403, username
        assert client.post(f"{DESIGN}/deploy", data={"xml": SUSPENSION}).status_code == 403, username


def test_validate_names_broken_elements(demo, login):
    admin = login("tj_admin")
    broken = _with_review_task(form=False)
    response = admin.post(f"{DESIGN}/validate", data={"xml": broken})
    assert response.status_code == 400
    assert response.get_json()["ok"] is False
    assert {element for element, _ in _errors(response)} == {"clerk_review"}
    assert any("form" in message for _, message in _errors(response))

    fixed = admin.post(f"{DESIGN}/validate", data={"xml": _with_review_task(form=True)})
    assert fixed.status_code == 200
    assert fixed.get_json() == {"ok": True, "message": "校验通过，可以部署。", "errors": []}


def test_validate_lane_without_company_role(demo, login):
    admin = login("tj_admin")
    unknown = SUSPENSION.replace('<bpmn:lane id="lane_field_staff" name="field_staff">', '<bpmn:lane id="lane_field_staff" name="valve_team">')
    response = admin.post(f"{DESIGN}/validate", data={"xml": unknown})
    assert response.status_code == 400
    assert "lane_field_staff" in {element for element, _ in _errors(response)}

    # The lane name is a known role code, but TJ has deleted that role: its tasks would find no one.
    from app.org.models import Role, UserRole

    role = db.session.scalar(sa.select(Role).filter_by(company_id=demo["TJ"].id, code="field_staff"))
    db.session.execute(sa.delete(UserRole).where(UserRole.role_id == role.id))
    db.session.delete(role)
    db.session.commit()
    response = admin.post(f"{DESIGN}/validate", data={"xml": SUSPENSION})
    assert response.status_code == 400
    assert [e["element_id"] for e in response.get_json()["errors"]] == ["lane_field_staff"]
    assert "本公司没有角色「field_staff」" in response.get_json()["errors"][0]["message"]


def test_validate_unquoted_timer(demo, login):
    admin = login("tj_admin")
    timer = """    <bpmn:boundaryEvent id="approval_overdue" attachedToRef="company_approval" cancelActivity="false">
      <bpmn:timerEventDefinition id="approval_overdue_timer"><bpmn:timeDuration>PT48H</bpmn:timeDuration></bpmn:timerEventDefinition>
    </bpmn:boundaryEvent>
"""
    xml = SUSPENSION.replace('    <bpmn:exclusiveGateway id="company_decision_gateway"', timer + '    <bpmn:exclusiveGateway id="company_decision_gateway"')
    response = admin.post(f"{DESIGN}/validate", data={"xml": xml})
    assert response.status_code == 400
    messages = [message for element, message in _errors(response) if element == "approval_overdue"]
    assert any('"PT48H"' in message for message in messages)


def test_draft_is_kept_and_reopened(demo, login):
    admin = login("tj_admin")
    broken = _with_review_task(form=False)
    response = admin.post(f"{DESIGN}/draft", data={"xml": broken, "base_version": "1"})
    assert response.status_code == 200
    assert response.get_json()["ok"] is True
    source = admin.get(f"{DESIGN}/source").get_json()
    assert source["origin"] == "draft"
    assert source["version"] == 1
    assert source["xml"] == broken
    # The time is the company's local time, as on every other page.
    draft = db.session.scalar(sa.select(ProcessDraft).filter_by(company_id=demo["TJ"].id, process_type="suspension"))
    assert response.get_json()["message"] == f"草稿已保存（{format_local(draft.updated_at, '%H:%M:%S')}）。"
    # A draft is not deployed: new requests still use version 1.
    assert latest_model(demo["TJ"].id, "suspension").version == 1


def test_deploy_next_version_only_for_company(demo, login, make_account):
    admin = login("tj_admin")
    assert admin.post(f"{DESIGN}/draft", data={"xml": "<x/>"}).status_code == 200
    rejected = admin.post(f"{DESIGN}/deploy", data={"xml": _with_review_task(form=False)})
    assert rejected.status_code == 400
    assert latest_model(demo["TJ"].id, "suspension").version == 1

    response = admin.post(f"{DESIGN}/deploy", data={"xml": _with_review_task(form=True)})
    assert response.status_code == 200
    assert response.get_json()["version"] == 2
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ProcessDraft)) == 0
    assert latest_model(demo["TJ"].id, "suspension").version == 2
    assert latest_model(demo["QD"].id, "suspension").version == 1
    retired = db.session.scalar(sa.select(ProcessModel).filter_by(company_id=demo["TJ"].id, process_type="suspension", version=1))
    assert retired.status == "retired"

    tj = start_suspension(make_account("TJ", "80.00").id, user("tj_clerk"), "vacant")
    qd = start_suspension(make_account("QD", "80.00").id, user("qd_clerk"), "vacant")
    assert db.session.get(ProcessInstance, tj.id).model.version == 2
    assert db.session.get(ProcessInstance, qd.id).model.version == 1


def test_bad_input_is_rejected_in_chinese(demo, login):
    admin = login("tj_admin")
    empty = admin.post(f"{DESIGN}/validate", data={})
    assert empty.status_code == 400
    assert "xml 字段为空" in empty.get_json()["message"]
    garbage = admin.post(f"{DESIGN}/validate", data={"xml": "<bpmn:definitions"})
    assert garbage.status_code == 400
    assert garbage.get_json()["errors"][0]["message"].startswith("文件无法读取")
    assert admin.get("/processes/design/teleport").status_code == 404
    assert admin.get(f"{DESIGN}/source?from=elsewhere").status_code == 400


def test_group_template_publish_and_start_from(demo, login):
    hq = login("hq_admin")
    assert hq.get("/processes/design").status_code == 200
    source = hq.get(f"{DESIGN}/source").get_json()
    assert source["origin"] == "bundled"
    assert source["version"] == 0
    published = hq.post(f"{DESIGN}/deploy", data={"xml": _with_review_task(form=True)})
    assert published.status_code == 200
    assert published.get_json() == {**published.get_json(), "ok": True, "version": 1, "kind": "template"}
    assert db.session.scalar(sa.select(ProcessTemplate.version).filter_by(process_type="suspension")) == 1
    # Publishing a template does not change a company's deployed versions.
    assert latest_model(demo["TJ"].id, "suspension").version == 1

    admin = login("tj_admin")
    template = admin.get(f"{DESIGN}/source?from=template").get_json()
    assert template["origin"] == "template"
    assert template["version"] == 1
    assert "clerk_review" in template["xml"]
    # The same text again publishes nothing new.
    assert hq.post(f"{DESIGN}/deploy", data={"xml": _with_review_task(form=True)}).get_json()["version"] == 1


def test_instance_diagram_path(demo, login, make_account):
    instance = start_suspension(make_account("TJ", "80.00").id, user("tj_clerk"), "vacant")
    response = login("tj_approver").get(f"/processes/instances/{instance.id}/diagram")
    assert response.status_code == 200
    body = response.get_json()
    assert body["version"] == 1
    assert {"start_request", "evaluate_escalation_task"} <= set(body["completed"])
    # The approval waits, and so do the timer events attached to it.
    assert "company_approval" in body["current"]
    assert set(body["current"]) - {"company_approval"} <= {
        "cancel_company_approval_deadline", "remind_company_approval", "escalate_company_approval",
    }
    # The viewer's copy names each lane by the company's role name instead of its role code.
    assert _lane_names(body["xml"]) == ["营业员", "分公司审批人", "集团审批人", "外勤人员"]
    assert _lane_names(SUSPENSION) == ["clerk", "company_approver", "group_approver", "field_staff"]
    assert _element_ids(body["xml"]) == _element_ids(SUSPENSION)
    assert login("qd_approver").get(f"/processes/instances/{instance.id}/diagram").status_code == 404


def test_instance_diagram_lanes_english(demo, login, make_account):
    instance = start_suspension(make_account("TJ", "80.00").id, user("tj_clerk"), "vacant")
    approver = login("tj_approver")
    assert approver.post("/language", data={"locale": "en"}).status_code in (302, 303)

    body = approver.get(f"/processes/instances/{instance.id}/diagram").get_json()
    # TJ's roles keep their seeded names, so they are translated; the group lane has no company role.
    assert _lane_names(body["xml"]) == ["Clerk", "Company approver", "Group approver", "Field worker"]


def test_instance_diagram_renamed_role_english(demo, login, make_account):
    db.session.execute(sa.update(Role).where(Role.company_id == demo["TJ"].id, Role.code == "clerk").values(name="收费营业员"))
    db.session.commit()
    instance = start_suspension(make_account("TJ", "80.00").id, user("tj_clerk"), "vacant")
    approver = login("tj_approver")
    assert approver.post("/language", data={"locale": "en"}).status_code in (302, 303)

    body = approver.get(f"/processes/instances/{instance.id}/diagram").get_json()
    # A role the company renamed is company data and shows as written.
    assert _lane_names(body["xml"]) == ["收费营业员", "Company approver", "Group approver", "Field worker"]


def _lane_names(xml):
    return re.findall(r'<bpmn:lane id="[^"]+" name="([^"]*)"', xml)


def _element_ids(xml):
    return sorted(re.findall(r' id="([^"]+)"', xml))


def test_pages_keep_strict_csp(demo, login):
    admin = login("tj_admin")
    for url in (DESIGN, "/processes/design", "/processes/design/decisions/suspension_escalation"):
        response = admin.get(url)
        assert response.status_code == 200, url
        policy = response.headers["Content-Security-Policy"]
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        assert "<script>" not in response.get_data(as_text=True)
    assert admin.get("/processes/design/decisions/1bad id").status_code == 404


def test_validate_unconnected_task(demo, login):
    admin = login("tj_admin")
    dangling = """    <bpmn:userTask id="forgotten_task" name="无连线任务">
      <bpmn:extensionElements>
        <spiffworkflow:properties>
          <spiffworkflow:property name="form" value="approval" />
        </spiffworkflow:properties>
      </bpmn:extensionElements>
    </bpmn:userTask>
"""
    xml = SUSPENSION.replace(
        "<bpmn:flowNodeRef>start_request</bpmn:flowNodeRef>",
        "<bpmn:flowNodeRef>start_request</bpmn:flowNodeRef>\n        <bpmn:flowNodeRef>forgotten_task</bpmn:flowNodeRef>",
    ).replace('    <bpmn:userTask id="company_approval"', dangling + '    <bpmn:userTask id="company_approval"')
    response = admin.post(f"{DESIGN}/validate", data={"xml": xml})
    assert response.status_code == 400
    errors = response.get_json()["errors"]
    assert [e["element_id"] for e in errors] == ["forgotten_task"]
    assert errors[0]["message"] == "该元素没有连入的顺序流，流程不会到达它，且没有连出的顺序流，流程到此无法继续；请补上连线或删除它。"
    # The bundled diagrams are fully connected.
    for process_type in ("suspension", "waiver", "forced_shutoff", "area_adjustment", "reheating", "connection"):
        bundled = (BPMN_DIR / f"{process_type}.bpmn").read_text(encoding="utf-8")
        response = admin.post(f"/processes/design/{process_type}/validate", data={"xml": bundled})
        assert response.get_json()["errors"] == [], process_type


def _drift(hq):
    page = hq.get("/processes/design/templates")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    rows = {}
    for match in re.finditer(r'<tr data-company="(\w+)" data-process-type="suspension"[^>]*>(.*?)</tr>', html, re.S):
        rows[match.group(1)] = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", match.group(2), re.S)]
    return rows


def test_model_records_template_lineage(demo, login):
    tj = demo["TJ"].id
    assert latest_model(tj, "suspension").template_version == 0
    hq = login("hq_admin")
    assert hq.post(f"{DESIGN}/deploy", data={"xml": _with_review_task(form=True)}).get_json()["version"] == 1

    admin = login("tj_admin")
    assert admin.get(f"{DESIGN}/source?from=template").get_json()["template_version"] == 1
    changed = _with_review_task(form=True).replace('name="营业员复核"', 'name="营业员复核（天津）"')
    assert admin.post(f"{DESIGN}/draft", data={"xml": changed, "base_version": "1"}).status_code == 200
    assert db.session.scalar(sa.select(ProcessDraft.template_version).filter_by(company_id=tj)) == 1
    assert admin.post(f"{DESIGN}/deploy", data={"xml": changed}).status_code == 200
    model = latest_model(tj, "suspension")
    assert (model.version, model.template_version) == (2, 1)

    # Reopening the published copy keeps its lineage for the next deploy.
    assert admin.get(f"{DESIGN}/source").get_json()["template_version"] == 1
    assert admin.post(f"{DESIGN}/deploy", data={"xml": changed.replace("天津", "天津市")}).status_code == 200
    assert latest_model(tj, "suspension").template_version == 1


def test_exact_template_copy_is_recognised(demo, login):
    hq = login("hq_admin")
    hq.post(f"{DESIGN}/deploy", data={"xml": _with_review_task(form=True)})
    admin = login("qd_admin")
    # The published copy (template 0) is open, but the deployed text is template 1's.
    assert admin.get(f"{DESIGN}/source").get_json()["template_version"] == 0
    assert admin.post(f"{DESIGN}/deploy", data={"xml": _with_review_task(form=True)}).status_code == 200
    assert latest_model(demo["QD"].id, "suspension").template_version == 1


def test_headquarters_sees_template_drift(demo, login):
    hq = login("hq_admin")
    rows = _drift(hq)
    assert rows["TJ"][2:] == ["1", "0", "未修改", "0", "已是最新模板"]
    hq.post(f"{DESIGN}/deploy", data={"xml": _with_review_task(form=True)})

    admin = login("tj_admin")
    admin.get(f"{DESIGN}/source?from=template")
    admin.post(f"{DESIGN}/deploy", data={"xml": _with_review_task(form=True).replace('name="营业员复核"', 'name="复核"')})
    rows = _drift(hq)
    assert rows["TJ"][2:] == ["2", "1", "已修改", "1", "已是最新模板"]
    assert rows["QD"][2:] == ["1", "0", "未修改", "1", "模板已更新，尚未跟进"]
    assert login("tj_admin").get("/processes/design/templates").status_code == 403
    assert login("tj_clerk").get("/processes/design/templates").status_code == 403

"""The process designer and the instance diagram driven through Chromium.

TJ's administrator adds a review task to the suspension diagram with the modeler API
(drag and drop is impractical in a test), sees the server's finding on that task, fixes
it in the properties panel and deploys version 2. New TJ requests then run on version 2
while QD's still run on version 1, and the instance page marks the path taken. Every page
is checked for Content-Security-Policy violations.
"""

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.network.models import Account
from app.org.models import User
from app.processes.deployment import latest_model
from app.processes.models import HumanTask
from app.processes.services import start_suspension
from tests.browser.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

DIST = ROOT / "app" / "static" / "dist"
# Recorded by an init script, which Playwright injects outside the page's CSP.
CSP_RECORDER = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}:${event.lineNumber}:${event.columnNumber} ${event.sample}`);
});
"""
ADD_REVIEW_TASK = """() => {
  const modeler = window.heatflowDesigner.modeler;
  const registry = modeler.get('elementRegistry');
  const modeling = modeler.get('modeling');
  const start = registry.get('start_request');
  const escalation = registry.get('evaluate_escalation_task');
  modeling.removeConnection(registry.get('flow_start_to_escalation'));
  modeling.moveElements([escalation], { x: 150, y: 0 });
  const businessObject = modeler.get('bpmnFactory').create('bpmn:UserTask', { id: 'clerk_review', name: '营业员复核' });
  const shape = modeler.get('elementFactory').createShape({ type: 'bpmn:UserTask', businessObject });
  const task = modeling.createShape(shape, { x: 340, y: 140 }, registry.get('suspension_participant'));
  modeling.connect(start, task);
  modeling.connect(task, escalation);
  return task.businessObject.lanes ? task.businessObject.lanes.map((lane) => lane.name) : [];
}"""


def _account(company_code):
    """A residential TJ or QD account of at most 200 m² in 正常 status, so that no group approval is needed."""
    return db.session.scalar(
        sa.select(Account)
        .join(User, User.company_id == Account.company_id)
        .where(User.username == f"{company_code.lower()}_clerk", Account.billing_status == "normal",
               Account.user_type == "residential", Account.building_area <= 200)
        .order_by(Account.id)
        .limit(1)
    )


def _user(username):
    return db.session.scalar(sa.select(User).filter_by(username=username))


def _no_csp_violations(page):
    assert page.evaluate("window.__cspViolations") == []


@pytest.fixture
def tj_and_qd(import_fixture):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    assert import_fixture("QD", "QD-shared.xlsx").ok
    db.session.commit()


def test_design_deploy_and_view_path(page, browser_login, screenshot, demo, tj_and_qd):
    assert (DIST / "designer.js").exists(), "The browser bundles are missing; run bin/setup to build them."
    page.add_init_script(CSP_RECORDER)
    browser_login(page, "tj_admin")
    page.get_by_role("link", name="流程设计").click()
    page.locator('tr[data-process-type="suspension"]').get_by_role("link", name="打开设计器").click()
    page.wait_for_selector('#designer[data-loaded="published"]')
    assert page.locator("#designer-origin").inner_text() == "已打开：已部署 版本 1"
    assert page.locator('.djs-element[data-element-id="company_approval"]').count() == 1

    # The lane panel offers TJ's roles by their Chinese names.
    page.evaluate("window.heatflowDesigner.modeler.get('selection').select("
                  "window.heatflowDesigner.modeler.get('elementRegistry').get('lane_field_staff'))")
    page.get_by_text("热费平台设置").click()
    lane_role = page.locator("#bio-properties-panel-heatflow-lane-role")
    assert lane_role.input_value() == "field_staff"
    assert "外勤人员（field_staff）" in lane_role.inner_text()
    screenshot(page, "designer-lane-role")

    lanes = page.evaluate(ADD_REVIEW_TASK)
    assert lanes == ["clerk"]
    page.get_by_role("button", name="校验").click()
    page.wait_for_selector('#designer[data-validated="errors"]')
    errors = page.locator("#designer-errors li")
    assert errors.count() == 1
    assert errors.first.inner_text().startswith("clerk_review：用户任务没有设置表单（属性 form）")
    assert page.locator('.djs-element.hf-error[data-element-id="clerk_review"]').count() == 1
    screenshot(page, "designer-validation-error")

    # Fix the task in the properties panel: the approval form, with its decision stored as review_decision.
    errors.first.get_by_role("button").click()
    heatflow_group = page.get_by_text("热费平台设置")
    if page.locator("#bio-properties-panel-heatflow-form").count() == 0:
        heatflow_group.click()
    page.select_option("#bio-properties-panel-heatflow-form", "approval")
    assert "审批意见" in page.locator('[data-entry-id="heatflow-form"]').inner_text()
    page.fill("#bio-properties-panel-heatflow-data-prefix", "review")
    page.get_by_role("button", name="校验").click()
    page.wait_for_selector('#designer[data-validated="ok"]')
    assert page.locator("#designer-status").inner_text() == "校验通过，可以部署。"
    assert page.locator(".hf-error").count() == 0

    page.get_by_role("button", name="部署为新版本").click()
    page.wait_for_selector('#designer[data-deployed-version="2"]')
    assert "版本 2" in page.locator("#designer-status").inner_text()
    assert page.locator("#designer-version").inner_text() == "当前部署版本 2"
    screenshot(page, "designer-deployed")
    _no_csp_violations(page)

    db.session.expire_all()
    tj_model = latest_model(demo["TJ"].id, "suspension")
    assert tj_model.version == 2
    assert 'name="form" value="approval"' in tj_model.bpmn_xml
    assert latest_model(demo["QD"].id, "suspension").version == 1

    tj_instance = start_suspension(_account("TJ").id, _user("tj_clerk"), "vacant")
    qd_instance = start_suspension(_account("QD").id, _user("qd_clerk"), "vacant")
    assert tj_instance.model.version == 2
    assert qd_instance.model.version == 1
    tj_task = db.session.scalar(sa.select(HumanTask).filter_by(instance_id=tj_instance.id, status="open"))
    assert (tj_task.task_spec_name, tj_task.form, tj_task.lane_role) == ("clerk_review", "approval", "clerk")
    qd_task = db.session.scalar(sa.select(HumanTask).filter_by(instance_id=qd_instance.id, status="open"))
    assert qd_task.task_spec_name == "company_approval"

    page.goto(f"/processes/instances/{tj_instance.id}")
    page.wait_for_selector('#instance-diagram[data-loaded="true"]')
    assert page.locator('.djs-element.hf-completed[data-element-id="start_request"]').count() == 1
    assert page.locator('.djs-element.hf-current[data-element-id="clerk_review"]').count() == 1
    assert page.locator('.djs-element.hf-completed[data-element-id="clerk_review"]').count() == 0
    # Only the new flow from the start event into the review task has been taken.
    assert page.locator('.djs-connection.hf-taken').count() == 1
    screenshot(page, "instance-diagram-v2")
    _no_csp_violations(page)

    page.context.clear_cookies()
    browser_login(page, "qd_admin")
    page.goto(f"/processes/instances/{qd_instance.id}")
    page.wait_for_selector('#instance-diagram[data-loaded="true"]')
    assert page.locator('.djs-element[data-element-id="clerk_review"]').count() == 0
    assert page.locator('.djs-element.hf-current[data-element-id="company_approval"]').count() == 1
    for element in ("start_request", "evaluate_escalation_task"):
        assert page.locator(f'.djs-element.hf-completed[data-element-id="{element}"]').count() == 1
    assert page.locator('.djs-connection.hf-taken[data-element-id="flow_start_to_escalation"]').count() == 1
    assert page.locator('.djs-connection.hf-taken[data-element-id="flow_escalation_to_company"]').count() == 1
    # Lanes show role names, not the role codes the engine routes by.
    assert page.locator('.djs-element[data-element-id="lane_company_approver"] text').first.text_content() == "分公司审批人"
    screenshot(page, "instance-diagram-v1")
    _no_csp_violations(page)


ADD_PANEL_ELEMENTS = """() => {
  const modeler = window.heatflowDesigner.modeler;
  const registry = modeler.get('elementRegistry');
  const modeling = modeler.get('modeling');
  const bpmnFactory = modeler.get('bpmnFactory');
  const elementFactory = modeler.get('elementFactory');
  const timer = bpmnFactory.create('bpmn:BoundaryEvent', { id: 'approval_overdue', cancelActivity: false });
  timer.eventDefinitions = [bpmnFactory.create('bpmn:TimerEventDefinition', { id: 'approval_overdue_timer' })];
  timer.eventDefinitions[0].$parent = timer;
  const timerShape = elementFactory.createShape({ type: 'bpmn:BoundaryEvent', businessObject: timer });
  const approval = registry.get('company_approval');
  modeling.createShape(timerShape, { x: approval.x + 50, y: approval.y + approval.height }, approval, { attach: true });
  const rule = bpmnFactory.create('bpmn:BusinessRuleTask', { id: 'escalation_rule', name: '升级决策' });
  modeling.createShape(elementFactory.createShape({ type: 'bpmn:BusinessRuleTask', businessObject: rule }),
    { x: 900, y: 160 }, registry.get('suspension_participant'));
  const service = bpmnFactory.create('bpmn:ServiceTask', { id: 'rebill_again', name: '再次重算' });
  modeling.createShape(elementFactory.createShape({ type: 'bpmn:ServiceTask', businessObject: service }),
    { x: 1100, y: 160 }, registry.get('suspension_participant'));
}"""


def _select(page, element_id):
    page.evaluate(
        "(id) => window.heatflowDesigner.modeler.get('selection')"
        ".select(window.heatflowDesigner.modeler.get('elementRegistry').get(id))",
        element_id,
    )
    if page.locator('[data-group-id="group-heatflow"] .bio-properties-panel-group-entries.open').count() == 0:
        page.get_by_text("热费平台设置").click()


def _saved_xml(page):
    return page.evaluate("async () => (await window.heatflowDesigner.modeler.saveXML({ format: true })).xml")


def test_panel_writes_timer_service_and_decision(page, browser_login, screenshot, demo):
    """The group administrator edits the template: each Heatflow entry writes the XML the engine reads."""
    page.add_init_script(CSP_RECORDER)
    browser_login(page, "hq_admin")
    page.goto("/processes/design/suspension")
    page.wait_for_selector('#designer[data-loaded="bundled"]')
    assert page.get_by_role("button", name="发布模板").count() == 1
    page.evaluate(ADD_PANEL_ELEMENTS)

    _select(page, "approval_overdue")
    page.select_option("#bio-properties-panel-heatflow-timer-kind", "timeDuration")
    page.fill("#bio-properties-panel-heatflow-timer-value", "P3D")
    page.keyboard.press("Tab")
    # The built-in timer group, which would write the value unquoted, is replaced by ours.
    assert page.locator('[data-group-id="group-timer"]').count() == 0
    screenshot(page, "designer-timer")
    _select(page, "escalation_rule")
    page.fill("#bio-properties-panel-heatflow-decision", "suspension_escalation")
    page.keyboard.press("Tab")
    _select(page, "rebill_again")
    page.select_option("#bio-properties-panel-heatflow-service", "rebill_suspension")
    page.fill("#bio-properties-panel-heatflow-parameter-account_id", "account_id")
    page.keyboard.press("Tab")
    screenshot(page, "designer-service-task")

    xml = _saved_xml(page)
    assert '<bpmn:timeDuration xsi:type="bpmn:tFormalExpression">"P3D"</bpmn:timeDuration>' in xml
    assert "<spiffworkflow:calledDecisionId>suspension_escalation</spiffworkflow:calledDecisionId>" in xml
    assert '<spiffworkflow:serviceTaskOperator id="rebill_suspension" resultVariable="rebill_suspension_result">' in xml
    assert '<spiffworkflow:parameter id="account_id" type="any" value="account_id" />' in xml
    # The original service tasks are written back unchanged.
    assert '<spiffworkflow:parameter id="valve_state" type="str" value="valve_result" />' in xml

    page.get_by_role("button", name="校验").click()
    page.wait_for_selector("#designer[data-validated]")
    # The three new elements are not connected yet, so each is flagged for its missing flows;
    # nothing is flagged for the values the panel wrote (quoted timer, service parameter, decision id).
    flagged = page.locator("#designer-errors li button").all_inner_texts()
    assert sorted(flagged) == ["approval_overdue", "escalation_rule", "rebill_again"]
    messages = page.locator("#designer-errors").inner_text()
    assert "没有连出的顺序流" in messages
    assert "quoted" not in messages
    assert "parameter" not in messages
    _no_csp_violations(page)


EDIT_CELL = """([id, text]) => {
  const viewer = window.heatflowDecisionEditor.modeler.getActiveViewer();
  viewer.get('modeling').editCell(viewer.get('elementRegistry').get(id).businessObject, text);
}"""


def test_decision_editor_rejects_then_saves(page, browser_login, screenshot, demo):
    """TJ's administrator lowers the area threshold of the suspension table, first with an unknown variable."""
    from app.processes.decisions import current_decision

    page.add_init_script(CSP_RECORDER)
    browser_login(page, "tj_admin")
    page.goto("/processes/design")
    page.locator("#decision-index tr", has_text="suspension_escalation").get_by_role("link", name="编辑决策表").click()
    page.wait_for_selector('#decision-editor[data-loaded="true"]')
    cell = page.locator('td[data-element-id="rule_area_input_area"]')
    assert cell.inner_text().strip() == "> 200"
    version_before = current_decision(demo["TJ"].id, "suspension_escalation").version

    page.evaluate(EDIT_CELL, ["rule_area_input_area", "> floor_area"])
    page.get_by_role("button", name="保存决策表").click()
    page.wait_for_selector("#decision-errors li")
    errors = page.locator("#decision-errors li")
    assert errors.count() == 1
    assert errors.first.get_by_role("button").inner_text() == "rule_area"
    assert "floor_area" in errors.first.inner_text()
    # The whole rule is marked: its index, two input, two output and annotation cells.
    assert page.locator('td.hf-error-cell[data-row-id="rule_area"]').count() == 6
    assert page.locator(".hf-error-cell").count() == 6
    screenshot(page, "decision-editor-error")
    db.session.expire_all()
    assert current_decision(demo["TJ"].id, "suspension_escalation").version == version_before

    page.evaluate(EDIT_CELL, ["rule_area_input_area", "> 150"])
    page.evaluate(EDIT_CELL, ["rule_area_output_reason", '"建筑面积 " + text(building_area) + " ㎡ 超过 150 ㎡，需集团审批"'])
    page.get_by_role("button", name="保存决策表").click()
    page.wait_for_selector(f'#decision-editor[data-saved-version="{version_before + 1}"]')
    assert page.locator("#decision-errors li").count() == 0
    assert page.locator(".hf-error-cell").count() == 0
    screenshot(page, "decision-editor-saved")
    _no_csp_violations(page)

    db.session.expire_all()
    saved = current_decision(demo["TJ"].id, "suspension_escalation")
    assert saved.version == version_before + 1
    assert "&gt; 150" in saved.dmn_xml
    assert "超过 150 ㎡，需集团审批" in saved.dmn_xml
    assert current_decision(demo["QD"].id, "suspension_escalation").version == 1


# Texts rendered through the `translate` service, keyed by where they appear: those of bpmn-js,
# its properties panel and dmn-js (Chinese from frontend/src/locale/zh_CN.json) and Heatflow's
# own (English from frontend/src/locale/en.json).
DESIGNER_TEXTS = {
    "zh_CN": {
        "create.start-event": "创建开始事件",
        "create.task": "创建任务",
        "hand-tool": "抓手工具",
        "append.append-task": "追加任务",
        "replace": "更改元素类型",
        "delete": "删除",
        "header_type": "用户任务",
        "general_group": "常规",
        "replace_menu_entry": "服务任务",
        "empty_id": "编号不能为空。",
        "hit_policy": "命中策略：",
        "hit_policy_value": "汇总（COLLECT）",
        "origin": "已打开：已部署 版本 1",
        "heatflow_group": "热费平台设置",
        "form_label": "表单",
        "form_choice": "审批（approval）",
    },
    "en": {
        "create.start-event": "Create start event",
        "create.task": "Create task",
        "hand-tool": "Activate hand tool",
        "append.append-task": "Append task",
        "replace": "Change element",
        "delete": "Delete",
        "header_type": "User Task",
        "general_group": "General",
        "replace_menu_entry": "Service task",
        "empty_id": "ID must not be empty.",
        "hit_policy": "Hit policy:",
        "hit_policy_value": "Collect",
        "origin": "Opened: deployed version 1",
        "heatflow_group": "Heatflow settings",
        "form_label": "Form",
        "form_choice": "Approval (approval)",
    },
}


def _check_designer_texts(page, screenshot, locale):
    texts = DESIGNER_TEXTS[locale]
    page.goto("/processes/design/suspension")
    page.wait_for_selector('#designer[data-loaded="published"]')
    assert page.locator("#designer").get_attribute("data-locale") == locale
    for action in ("create.start-event", "create.task", "hand-tool"):
        # diagram-js puts a palette entry's title in aria-label, not in a title attribute.
        assert page.locator(f'.djs-palette .entry[data-action="{action}"]').get_attribute("aria-label") == texts[action]

    page.evaluate("window.heatflowDesigner.modeler.get('selection').select("
                  "window.heatflowDesigner.modeler.get('elementRegistry').get('company_approval'))")
    for action in ("append.append-task", "replace", "delete"):
        assert page.locator(f'.djs-context-pad .entry[data-action="{action}"]').get_attribute("title") == texts[action]
    # text_content, because the panel shows the type in capitals through CSS.
    assert page.locator(".bio-properties-panel-header-type").text_content() == texts["header_type"]
    general = page.locator('[data-group-id="group-general"] .bio-properties-panel-group-header-title')
    assert general.inner_text() == texts["general_group"]
    # Heatflow's own texts in the same page go through the same translate service.
    assert page.locator("#designer-origin").inner_text() == texts["origin"]
    heatflow = page.locator('[data-group-id="group-heatflow"]')
    assert heatflow.locator(".bio-properties-panel-group-header-title").inner_text() == texts["heatflow_group"]
    if heatflow.locator(".bio-properties-panel-group-entries.open").count() == 0:
        heatflow.locator(".bio-properties-panel-group-header").click()
    assert page.locator('[data-entry-id="heatflow-form"] label').first.inner_text() == texts["form_label"]
    # The form choices come from the server, translated there.
    form = page.locator("#bio-properties-panel-heatflow-form")
    assert form.locator("option:checked").inner_text() == texts["form_choice"]

    # The properties panel's own ID check, shown below the emptied field.
    if page.locator('[data-group-id="group-general"] .bio-properties-panel-group-entries.open').count() == 0:
        general.click()
    page.fill("#bio-properties-panel-id", "")
    assert page.locator('[data-entry-id="id"] .bio-properties-panel-error').inner_text() == texts["empty_id"]

    page.locator('.djs-context-pad .entry[data-action="replace"]').click()
    assert page.locator(".djs-popup").get_by_text(texts["replace_menu_entry"], exact=True).count() == 1
    screenshot(page, f"designer-texts-{locale}")
    page.keyboard.press("Escape")

    page.goto("/processes/design/decisions/suspension_escalation")
    page.wait_for_selector('#decision-editor[data-loaded="true"]')
    assert page.locator("#decision-editor").get_attribute("data-locale") == locale
    assert page.locator(".hit-policy .dms-label").inner_text().strip() == texts["hit_policy"]
    assert page.locator(".hit-policy .dms-input").inner_text().strip() == texts["hit_policy_value"]
    screenshot(page, f"decision-editor-texts-{locale}")


def test_designer_texts_follow_user_language(page, browser_login, screenshot, demo):
    """The palette, context pad, replace menu, panel and table editor are Chinese by default and English by choice."""
    page.add_init_script(CSP_RECORDER)
    browser_login(page, "tj_admin")
    _check_designer_texts(page, screenshot, "zh_CN")
    _no_csp_violations(page)

    db.session.execute(sa.update(User).where(User.username == "tj_admin").values(locale="en"))
    db.session.commit()
    _check_designer_texts(page, screenshot, "en")
    _no_csp_violations(page)


def test_run_failure_history_per_language(page, browser_login, screenshot, demo, tj_and_qd):
    """An expression that fails at run time shows in the instance history in the reader's language."""
    from app.processes.deployment import BPMN_DIR, deploy_model
    from app.processes.engine import ProcessRunError
    from app.processes.services import claim_task, complete_task

    xml = (BPMN_DIR / "suspension.bpmn").read_text(encoding="utf-8")
    deploy_model(demo["TJ"].id, "suspension", xml.replace("company_decision == 'reject'", "company_decison == 'reject'"))
    db.session.commit()
    instance = start_suspension(_account("TJ").id, _user("tj_clerk"), "vacant")
    task = db.session.scalar(sa.select(HumanTask).filter_by(instance_id=instance.id, status="open"))
    approver = _user("tj_approver")
    claim_task(task.id, approver)
    with pytest.raises(ProcessRunError):
        complete_task(task.id, approver, {"decision": "approve", "comment": "同意"})

    browser_login(page, "tj_admin")
    page.goto(f"/processes/instances/{instance.id}")
    failure = page.locator(".process-events tbody tr", has_text="company_decison").last
    chinese = failure.inner_text()
    assert "的表达式运行失败：名称 'company_decison' 不在任务数据中" in chinese
    assert "（原文：expression of element" in chinese
    screenshot(page, "instance-run-failure-zh_CN")

    db.session.execute(sa.update(User).where(User.username == "tj_admin").values(locale="en"))
    db.session.commit()
    page.reload()
    english = failure.inner_text()
    assert "failed: The name 'company_decison' is not in the task data" in english
    assert "(original:" not in english
    assert "运行失败" not in english
    screenshot(page, "instance-run-failure-en")

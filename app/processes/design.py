"""The browser designer's services: drafts, group templates, validation findings per element, deployment and instance paths.

A company designs its own copy of each process type. The designer opens the company's
draft, else its newest published version, else the group template. Deploying validates
the diagram and stores it as the company's next version. Headquarters edits the group
templates the same way, and publishing a template never changes a company's deployed
versions. Findings are returned as `{"element_id", "message"}` so the page can mark the
element on the diagram.
"""

import logging
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import gettext as _
from lxml import etree
from SpiffWorkflow.util.task import TaskState

from app.extensions import db
from app.i18n import N_, NC_, join_items, translate_label
from app.org.models import Role
from app.processes.bpmn_check import BPMN_NS, check_bpmn
from app.processes.deployment import BPMN_DIR, deploy_model, latest_model, sha256_text
from app.processes.engine import KNOWN_LANES, ModelValidationError, ProcessRunError, RunContext, load_workflow, validate_model
from app.processes.fields import TASK_FORMS
from app.processes.lanes import lane_name, role_names
from app.processes.models import PROCESS_TYPES, ProcessDraft, ProcessTemplate
from app.processes.registry import SERVICES
from app.processes.step_names import shown_flow_name, shown_step_name
from app.tenancy import reading_every_company, scoped

logger = logging.getLogger(__name__)

# Flask 3.1 rejects a form field over 500 000 bytes (MAX_FORM_MEMORY_SIZE) with 413 before this
# check runs. 150 000 characters stay below that even at 3 bytes each; the bundled diagrams have under 20 000.
MAX_DIAGRAM_CHARS = 150_000
# Lanes that headquarters staff work in, so no company role is needed for them.
GROUP_LANES = {"group_approver"}
FORM_LABELS = {
    "approval": NC_("task form", "审批"),
    "notice": NC_("task form", "催缴通知"),
    "valve_close": NC_("task form", "关栓"),
    "valve_open": NC_("task form", "开栓"),
    "survey": NC_("task form", "现场勘察"),
    "connect": NC_("task form", "接网开栓"),
    "supplement": NC_("task form", "补充材料"),
}
ORIGIN_LABELS = {"draft": "草稿", "published": "已部署", "template": "集团模板", "bundled": "系统内置模板"}


class DesignError(ValueError):
    """A designer request that cannot be carried out; `findings` lists element errors when there are some."""

    def __init__(self, message, findings=()):
        super().__init__(message)
        self.findings = list(findings)


def check_process_type(process_type):
    """Raise DesignError unless `process_type` is one of the six process types."""
    if process_type not in PROCESS_TYPES:
        raise DesignError(_("未知的流程类型「%(type)s」；可选：%(choices)s。", type=process_type[:32], choices=join_items(PROCESS_TYPES)))


# -- group templates


def template_query(process_type):
    """Select the group templates of a process type, newest first, for users of any company."""
    return (
        sa.select(ProcessTemplate)
        .where(ProcessTemplate.process_type == process_type)
        .order_by(ProcessTemplate.version.desc())
        .execution_options(skip_tenant_scope=True)
    )


def latest_template(process_type):
    """Return the newest published group template of a process type, or None when only the bundled file exists."""
    # Templates belong to headquarters, so row-level security hides them from a company scope.
    with scoped(reading_every_company()):
        return db.session.scalar(template_query(process_type).limit(1))


def template_source(process_type):
    """Return (xml, version, origin) of the group template; version 0 and origin "bundled" mean bpmn/<type>.bpmn."""
    template = latest_template(process_type)
    if template is not None:
        return template.bpmn_xml, template.version, "template"
    return (BPMN_DIR / f"{process_type}.bpmn").read_text(encoding="utf-8"), 0, "bundled"


def publish_template(headquarters, process_type, bpmn_xml, user):
    """Validate a diagram and store it as the next group template version; returns the ProcessTemplate.

    Raises DesignError with the findings when the diagram cannot be deployed. The same
    text as the newest template returns that template unchanged.
    """
    check_process_type(process_type)
    _raise_findings(validate_design(headquarters, process_type, bpmn_xml))
    current = latest_template(process_type)
    digest = sha256_text(bpmn_xml)
    if current is not None and current.sha256 == digest:
        _drop_draft(headquarters.id, process_type)
        return current
    template = ProcessTemplate(
        company_id=headquarters.id, process_type=process_type, version=(current.version if current else 0) + 1,
        bpmn_xml=bpmn_xml, sha256=digest, published_by_id=user.id,
    )
    db.session.add(template)
    _drop_draft(headquarters.id, process_type)
    db.session.flush()
    logger.info("User %s published group template %s version %s", user.id, process_type, template.version)
    return template


def template_version_of(process_type, digest):
    """Return the group template version whose text has sha256 `digest` (0 for the bundled file), or None."""
    # Templates belong to headquarters, so the read scope widens as in latest_template.
    with scoped(reading_every_company()):
        version = db.session.scalar(
            sa.select(ProcessTemplate.version).where(ProcessTemplate.process_type == process_type, ProcessTemplate.sha256 == digest)
            .order_by(ProcessTemplate.version.desc()).limit(1)
        )
    if version is not None:
        return version
    if digest == sha256_text((BPMN_DIR / f"{process_type}.bpmn").read_text(encoding="utf-8")):
        return 0
    return None


@dataclass(frozen=True)
class TemplateDrift:
    """The lineage of one company's deployed diagram of a process type: its source template version and whether it changed."""

    company: object
    process_type: str
    model: object
    # Template version the deployed diagram descends from, None when unknown.
    based_on: int | None
    # True when the deployed text equals that template version's text.
    unchanged: bool
    latest_template: int

    @property
    def outdated(self):
        return self.based_on is not None and self.based_on < self.latest_template


def template_drift(companies):
    """Compare each company's newest deployed model of every process type with the group templates, for headquarters."""
    rows = []
    for process_type in PROCESS_TYPES:
        latest = latest_template(process_type)
        latest_version = latest.version if latest else 0
        template_digests = {0: sha256_text((BPMN_DIR / f"{process_type}.bpmn").read_text(encoding="utf-8"))}
        template_digests.update(db.session.execute(
            sa.select(ProcessTemplate.version, ProcessTemplate.sha256).where(ProcessTemplate.process_type == process_type)
            .execution_options(skip_tenant_scope=True)
        ).all())
        for company in companies:
            model = latest_model(company.id, process_type)
            if model is None:
                continue
            rows.append(TemplateDrift(
                company=company, process_type=process_type, model=model, based_on=model.template_version,
                unchanged=template_digests.get(model.template_version) == model.sha256, latest_template=latest_version,
            ))
    return rows


# -- drafts and the designer's starting point


def draft_for(company_id, process_type):
    return db.session.scalar(
        sa.select(ProcessDraft).where(ProcessDraft.company_id == company_id, ProcessDraft.process_type == process_type)
    )


def design_source(company, process_type, origin=None):
    """Return the diagram the designer opens, as a dict with xml, origin, version and Chinese label.

    `origin="template"` opens the group template; the default opens the draft, else the
    company's newest published version, else the template. Headquarters designs the
    template itself.
    """
    check_process_type(process_type)
    if origin not in (None, "template"):
        raise DesignError(_("未知的来源「%(origin)s」；只能从集团模板（template）打开。", origin=origin[:16]))
    xml = version = template_version = None
    if origin is None:
        draft = draft_for(company.id, process_type)
        if draft is not None:
            xml, version, origin, template_version = draft.bpmn_xml, draft.base_version, "draft", draft.template_version
        elif not company.is_headquarters:
            model = latest_model(company.id, process_type)
            if model is not None:
                xml, version, origin, template_version = model.bpmn_xml, model.version, "published", model.template_version
    if xml is None:
        xml, version, origin = template_source(process_type)
        template_version = version
    return {"xml": xml, "origin": origin, "origin_label": ORIGIN_LABELS[origin], "version": version, "template_version": template_version}


def save_draft(company, process_type, bpmn_xml, base_version, user, template_version=None):
    """Store the designer's current diagram as the company's draft of a process type; returns the draft.

    The draft is kept even when it does not validate, so unfinished work is not lost.
    `template_version` is the group template version the opened diagram descends from.
    """
    check_process_type(process_type)
    _check_size(bpmn_xml)
    draft = draft_for(company.id, process_type)
    if draft is None:
        draft = ProcessDraft(company_id=company.id, process_type=process_type, bpmn_xml=bpmn_xml)
        db.session.add(draft)
    draft.bpmn_xml = bpmn_xml
    draft.base_version = base_version
    draft.template_version = template_version
    draft.updated_by_id = user.id
    db.session.flush()
    return draft


def _drop_draft(company_id, process_type):
    draft = draft_for(company_id, process_type)
    if draft is not None:
        db.session.delete(draft)


def _check_size(bpmn_xml):
    if not bpmn_xml.strip():
        raise DesignError(_("没有收到流程图（xml 字段为空），请在设计器中重新保存。"))
    if len(bpmn_xml) > MAX_DIAGRAM_CHARS:
        raise DesignError(_("流程图共 %(size)s 个字符，超过上限 %(limit)s；请删去无用的元素后重试。", size=len(bpmn_xml), limit=MAX_DIAGRAM_CHARS))


# -- validation and deployment


def validate_design(company, process_type, bpmn_xml):
    """Return the findings that block deploying a diagram for a company, as [{"element_id", "message"}]; empty when it deploys.

    Runs the import checks (structure, quoted timers, expressions, service names), the
    engine's parse and Heatflow's rules (known lanes, forms and service parameters), and
    checks that every company lane names a role the company has.
    """
    check_process_type(process_type)
    _check_size(bpmn_xml)
    report = check_bpmn(bpmn_xml.encode("utf-8"))
    if report.has_dtd:
        return [{"element_id": "", "message": _("文件含有 DOCTYPE 或实体声明（<!DOCTYPE …>），BPMN 文件不需要它们；请删除后重新保存。")}]
    if report.file_error:
        return [{"element_id": "", "message": _("文件无法读取：%(error)s", error=report.file_error)}]
    findings = [{"element_id": f.element_id, "message": f.reason} for f in report.findings]
    if not findings:
        try:
            validate_model(bpmn_xml, process_type)
        except ModelValidationError as error:
            findings.extend({"element_id": f.element_id, "message": f.reason} for f in error.findings)
    root = _parse(bpmn_xml)
    if root is not None:
        findings.extend(_lane_findings(company, root))
        findings.extend(_wiring_findings(root))
    unique = []
    for finding in findings:
        if finding not in unique:
            unique.append(finding)
    return unique


def _parse(bpmn_xml):
    """Parse a diagram without entities or network access; None when it is not well-formed (check_bpmn reports that)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)
    try:
        return etree.fromstring(bpmn_xml.encode("utf-8"), parser)
    except etree.XMLSyntaxError:
        return None


def _lane_findings(company, root):
    """Findings for lanes whose name is not a role: unknown lane names, and company lanes the company has no role for."""
    roles = company_role_codes(company)
    findings = []
    for lane in root.iter(f"{{{BPMN_NS}}}lane"):
        name = (lane.get("name") or "").strip()
        lane_id = lane.get("id", "")
        if name not in KNOWN_LANES:
            choices = join_items(sorted(KNOWN_LANES))
            findings.append({"element_id": lane_id, "message": _("泳道「%(name)s」不是流程角色；请在属性面板中选择角色：%(choices)s。", name=name, choices=choices)})
        elif name not in GROUP_LANES and not company.is_headquarters and name not in roles:
            findings.append({"element_id": lane_id, "message": _("本公司没有角色「%(name)s」，该泳道的任务将无人办理；请选择本公司已有的角色，或先在角色管理中添加。", name=name)})
    return findings


# Flow nodes that must be reached by a sequence flow, and the ones that must lead on.
NEEDS_INCOMING = {
    "task", "userTask", "manualTask", "scriptTask", "serviceTask", "sendTask", "receiveTask", "businessRuleTask",
    "callActivity", "subProcess", "exclusiveGateway", "inclusiveGateway", "parallelGateway", "eventBasedGateway",
    "intermediateCatchEvent", "intermediateThrowEvent", "endEvent",
}
NEEDS_OUTGOING = (NEEDS_INCOMING - {"endEvent"}) | {"startEvent", "boundaryEvent"}


def _wiring_findings(root):
    """Findings for flow nodes of the executable processes that no sequence flow reaches or leaves.

    The engine parses such a diagram, but an unreached task never runs and a node with no
    way out ends its branch silently, which in a drawing is almost always a missing arrow.
    """
    findings = []
    for process in root.iter(f"{{{BPMN_NS}}}process", f"{{{BPMN_NS}}}subProcess"):
        if process.get("isExecutable") == "false":
            continue
        flows = [child for child in process if etree.QName(child).localname == "sequenceFlow"]
        sources = {flow.get("sourceRef") for flow in flows}
        targets = {flow.get("targetRef") for flow in flows}
        for node in process:
            tag = etree.QName(node).localname
            node_id = node.get("id", "")
            unreached = tag in NEEDS_INCOMING and node_id not in targets
            dead_end = tag in NEEDS_OUTGOING and node_id not in sources
            if unreached and dead_end:
                message = _("该元素没有连入的顺序流，流程不会到达它，且没有连出的顺序流，流程到此无法继续；请补上连线或删除它。")
            elif unreached:
                message = _("该元素没有连入的顺序流，流程不会到达它；请补上连线或删除它。")
            elif dead_end:
                message = _("该元素没有连出的顺序流，流程到此无法继续；请补上连线或删除它。")
            else:
                continue
            findings.append({"element_id": node_id, "message": message})
    return findings


def company_role_codes(company):
    return set(db.session.scalars(sa.select(Role.code).where(Role.company_id == company.id)))


def deploy_design(company, process_type, bpmn_xml, user, template_version=None):
    """Validate and deploy a diagram as the company's next version (headquarters: publish the template).

    Returns (version number, kind) with kind "model" or "template"; raises DesignError
    with the findings when the diagram cannot be deployed. The model records the template
    version whose text it equals, else `template_version`, the one the designer opened.
    """
    if company.is_headquarters:
        return publish_template(company, process_type, bpmn_xml, user).version, "template"
    _raise_findings(validate_design(company, process_type, bpmn_xml))
    exact = template_version_of(process_type, sha256_text(bpmn_xml))
    try:
        model = deploy_model(
            company.id, process_type, bpmn_xml, user_id=user.id, template_version=exact if exact is not None else template_version,
        )
    except ModelValidationError as error:
        raise DesignError(_("流程图未通过部署校验。"), [{"element_id": f.element_id, "message": f.reason} for f in error.findings]) from error
    _drop_draft(company.id, process_type)
    db.session.flush()
    logger.info("User %s deployed %s version %s for company %s from the designer", user.id, process_type, model.version, company.id)
    return model.version, "model"


def _raise_findings(findings):
    if findings:
        raise DesignError(_("流程图有 %(count)s 处问题，未部署；请按图中标红的元素逐一修改。", count=len(findings)), findings)


# -- what the properties panel offers


def _translated(descriptions):
    """Return {name: description} with each description in the reader's language."""
    return {name: translate_label(text) for name, text in descriptions.items()}


def designer_options(company):
    """Return the choices of the properties panel: registered services, task forms and lanes (roles of the company)."""
    roles = {}
    if not company.is_headquarters:
        roles = role_names(company.id)
    lanes = []
    for code in sorted(KNOWN_LANES):
        if code in GROUP_LANES or company.is_headquarters or code in roles:
            name = lane_name(code, roles)
            lanes.append({"value": code, "label": _("%(name)s（%(code)s）", name=name, code=code)})
    return {
        "services": [
            {"name": service.name, "inputs": _translated(service.inputs), "outputs": _translated(service.outputs)}
            for service in sorted(SERVICES.values(), key=lambda s: s.name)
        ],
        "forms": [
            {
                "value": code,
                "label": _("%(name)s（%(code)s）", name=translate_label(FORM_LABELS.get(code, code)), code=code),
                "fields": [translate_label(f.label) for f in form.fields],
            }
            for code, form in TASK_FORMS.items()
        ],
        "lanes": lanes,
    }


# -- the path an instance took


def instance_path(instance):
    """Return the diagram of an instance's own version with the element ids it completed and the ones it waits at.

    Returns {"xml", "version", "completed", "current"}; `current` contains READY, STARTED,
    WAITING and ERROR tasks. A state that cannot be loaded gives empty lists, so the
    diagram still shows.
    """
    completed, current = [], []
    try:
        workflow = load_workflow(instance.state, RunContext(instance))
    except ProcessRunError as error:
        logger.warning("Instance %s state could not be loaded for its diagram: %s", instance.id, error)
        workflow = None
    if workflow is not None:
        waiting = TaskState.READY | TaskState.STARTED | TaskState.WAITING | TaskState.ERROR
        for task in workflow.get_tasks():
            element = getattr(task.task_spec, "bpmn_id", None)
            if not element:
                continue
            if task.has_state(TaskState.COMPLETED) and element not in completed:
                completed.append(element)
            elif task.state & waiting and element not in current:
                current.append(element)
    xml = with_reader_labels(instance.model.bpmn_xml, instance.company_id)
    return {"xml": xml, "version": instance.model.version, "completed": completed, "current": current}


def with_reader_labels(bpmn_xml, company_id):
    """Return a copy of a diagram for the read-only instance viewer, its labels in the reader's language.

    Lane names are the role codes (company_approver) that route tasks, so the copy shows the
    company's role name, else the translated lane label, as in the designer. A role name is
    translated while it is still the default name of its code; a company's renamed role is
    shown as written. Pool names
    equal to a process type label, and step and flow names of the default diagrams in bpmn/,
    are translated from the catalogue (app/processes/step_names.py). Any other name is one a
    company wrote and is shown as written, and so is the text of annotations, which the
    default diagrams do not have. In Chinese the copy differs from the stored diagram only in
    its lane names. A diagram that does not parse is returned unchanged.
    """
    try:
        root = etree.fromstring(bpmn_xml.encode("utf-8"))
    except etree.XMLSyntaxError:
        return bpmn_xml
    roles = role_names(company_id)
    process_labels = {str(label): label for label in PROCESS_TYPES.values()}
    for element in root.iter(f"{{{BPMN_NS}}}*"):
        name = element.get("name")
        if not name:
            continue
        kind = etree.QName(element).localname
        if kind == "lane":
            code = name.strip()
            if code in KNOWN_LANES:
                element.set("name", lane_name(code, roles))
        elif kind in ("participant", "process"):
            if name in process_labels:
                element.set("name", translate_label(process_labels[name]))
        elif kind == "sequenceFlow":
            element.set("name", shown_flow_name(name))
        else:
            element.set("name", shown_step_name(name))
    return etree.tostring(root, encoding="unicode")

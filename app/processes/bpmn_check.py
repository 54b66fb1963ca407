"""Check a foreign BPMN file before import: accept it, or list each element Heatflow cannot run.

The checker never raises on bad input. It reads the XML without entities or network
access, walks every element of every executable process, and reports one finding per
unsupported element (id, tag, reason). Non-executable processes are documentation and
are not checked, and a file with only those is accepted as documentation. When the static walk finds nothing, SpiffWorkflow parses the file as a
last check, and any error it raises becomes a finding too.
"""

import logging
import re
from dataclasses import dataclass, field

from lxml import etree

from app.i18n import translate_label
from app.processes.messages import EXPRESSION_KINDS, choices, finding_text, sandbox_error_text

BPMN_NS = "http://www.omg.org/spec/BPMN/20100524/MODEL"
SPIFF_NS = "http://spiffworkflow.org/bpmn/schema/1.0/core"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
MAX_FILE_BYTES = 5 * 1024 * 1024
DTD_PATTERN = re.compile(rb"<!(DOCTYPE|ENTITY)\b")

logger = logging.getLogger(__name__)

# Elements the engine cannot run at all -> the code of the finding text shown to the designer
# (translated when the finding is made, in the reader's language).
UNSUPPORTED = {
    "complexGateway": "complex_gateway",
    "compensateEventDefinition": "compensation",
    "dataStoreReference": "data_store",
    "choreographyTask": "choreography",
    "conversation": "conversation",
}
ACTIVITIES = {
    "task", "userTask", "manualTask", "scriptTask", "serviceTask", "sendTask", "receiveTask", "businessRuleTask",
    "callActivity", "subProcess", "transaction", "adHocSubProcess",
}
ISO_DURATION = re.compile(r"^\s*(R\d*/)?P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?\s*$")


@dataclass
class Finding:
    """One element that blocks deployment."""

    element_id: str
    tag: str
    reason: str
    name: str = ""

    def line(self):
        # A name wrapped onto several lines in the modeller keeps the report at one line per element.
        name = " ".join(self.name.split())
        label = f" 「{name}」" if name else ""
        return f"{self.element_id} <{self.tag}>{label}：{self.reason}"


@dataclass
class CheckReport:
    """Outcome of checking one BPMN file."""

    executable_processes: list = field(default_factory=list)
    documentation_processes: list = field(default_factory=list)
    findings: list = field(default_factory=list)
    file_error: str = ""
    # True when file_error is the DOCTYPE/entity rejection, which the designer words for saving.
    has_dtd: bool = False

    @property
    def accepted(self):
        return not self.file_error and not self.findings


def _local(element):
    return etree.QName(element).localname if isinstance(element.tag, str) else ""


def _bpmn_children(element, localname):
    return element.findall(f"{{{BPMN_NS}}}{localname}")


def _text(element, localname):
    child = element.find(f"{{{BPMN_NS}}}{localname}")
    return (child.text or "").strip() if child is not None else ""


def _finding(element, reason):
    return Finding(element.get("id", "(no id)"), _local(element), reason, element.get("name", "") or "")


def _check_expression(element, source, what, findings, validate_expression):
    try:
        validate_expression(source)
    except Exception as error:  # any sandbox complaint blocks deployment; report it, never crash
        findings.append(_finding(element, finding_text("expression_rejected", what=translate_label(EXPRESSION_KINDS[what]), source=source[:80], detail=sandbox_error_text(error))))


def _check_process(process, findings, service_names, validate_expression):
    ids = {e.get("id") for e in process.iter() if isinstance(e.tag, str) and e.get("id")}
    flows = {f.get("id"): f for f in process.iter(f"{{{BPMN_NS}}}sequenceFlow")}
    outgoing = {}
    for flow in flows.values():
        outgoing.setdefault(flow.get("sourceRef"), []).append(flow)

    for element in process.iter():
        if not isinstance(element.tag, str) or etree.QName(element).namespace != BPMN_NS:
            continue
        tag = _local(element)
        if tag in UNSUPPORTED:
            findings.append(_finding(element, finding_text(UNSUPPORTED[tag])))
        if element.get("isForCompensation") == "true":
            findings.append(_finding(element, finding_text("compensation")))
        if tag in ACTIVITIES and len(outgoing.get(element.get("id"), [])) > 1:
            findings.append(_finding(element, finding_text("implicit_split")))
        if tag in ("exclusiveGateway", "inclusiveGateway"):
            _check_gateway(element, outgoing.get(element.get("id"), []), findings, validate_expression)
        if tag == "serviceTask":
            _check_service_task(element, findings, service_names)
        if tag == "businessRuleTask":
            _check_business_rule_task(element, findings)
        if tag in ("subProcess", "transaction") and not _bpmn_children(element, "startEvent"):
            findings.append(_finding(element, finding_text("subprocess_without_start")))
        if tag == "multiInstanceLoopCharacteristics" and not (
            _text(element, "loopCardinality") or _bpmn_children(element, "loopDataInputRef")
        ):
            findings.append(_finding(element.getparent(), finding_text("multi_instance_without_input")))
        if tag == "standardLoopCharacteristics" and not (element.get("loopMaximum") or _text(element, "loopCondition")):
            findings.append(_finding(element.getparent(), finding_text("loop_without_end")))
        if tag in ("dataInputAssociation", "dataOutputAssociation"):
            for ref in ("sourceRef", "targetRef"):
                target = _text(element, ref)
                if target and target not in ids:
                    findings.append(_finding(element.getparent(), finding_text("data_reference_missing", association=tag, target=target)))
        if tag in ("timeDuration", "timeDate", "timeCycle"):
            _check_timer(element, findings, validate_expression)
        if tag == "scriptTask":
            script = _text(element, "script")
            if script:
                _check_expression(element, script, "script", findings, validate_expression)


def _check_gateway(gateway, flows, findings, validate_expression):
    default = gateway.get("default")
    if len(flows) < 2:
        return
    for flow in flows:
        condition = _text(flow, "conditionExpression")
        if flow.get("id") == default:
            continue
        if not condition:
            findings.append(_finding(flow, finding_text("flow_without_condition", gateway=gateway.get("id"))))
            continue
        language = (flow.find(f"{{{BPMN_NS}}}conditionExpression").get("language") or "").lower()
        if "feel" in language:
            findings.append(_finding(flow, finding_text("feel_condition")))
            continue
        _check_expression(flow, condition, "condition", findings, validate_expression)


def _check_service_task(task, findings, service_names):
    operator = task.find(f".//{{{SPIFF_NS}}}serviceTaskOperator")
    if operator is None:
        findings.append(_finding(task, finding_text("service_without_operator", choices=choices(sorted(service_names)))))
    elif operator.get("id") not in service_names:
        findings.append(_finding(task, finding_text("service_unknown", name=operator.get("id"), choices=choices(sorted(service_names)))))


def _check_business_rule_task(task, findings):
    from app.processes.dmn import DECISION_IDS

    called = task.find(f".//{{{SPIFF_NS}}}calledDecisionId")
    decision_id = (called.text or "").strip() if called is not None else ""
    if decision_id not in DECISION_IDS:
        findings.append(_finding(task, finding_text("decision_unknown", decision_id=decision_id, choices=choices(DECISION_IDS))))


def _check_timer(element, findings, validate_expression):
    source = (element.text or "").strip()
    owner = element.getparent().getparent() if element.getparent() is not None else element
    if not source:
        findings.append(_finding(owner, finding_text("timer_empty")))
    elif ISO_DURATION.match(source) or re.match(r"^\d{4}-\d{2}-\d{2}", source):
        findings.append(_finding(owner, finding_text("timer_unquoted", source=source)))
    else:
        _check_expression(owner, source, "timer", findings, validate_expression)


def _spiff_findings(content, process_ids):
    """Parse with SpiffWorkflow; return its complaint as findings (empty when it parses)."""
    from app.processes.dmn import DECISION_IDS, referenced_decisions, template_xml
    from app.processes.engine import HeatflowParser

    parser = HeatflowParser()
    try:
        parser.add_bpmn_str(content)
        # Business rule tasks were checked to call escalation tables; the group templates stand in for them.
        for decision_id in referenced_decisions(content.decode("utf-8")):
            parser.add_dmn_str(template_xml(DECISION_IDS[decision_id]).encode("utf-8"), filename=f"{decision_id}.dmn")
        for process_id in process_ids:
            parser.get_spec(process_id)
            parser.get_subprocess_specs(process_id)
    except Exception as error:  # the engine raises many types here, some not its own; all become findings
        element_id = getattr(error, "id", None) or "(file)"
        tag = getattr(error, "tag", None) or "definitions"
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        return [Finding(str(element_id), str(tag).split("}")[-1], finding_text("engine_rejected", detail=message))]
    return []


def check_bpmn(content):
    """Check BPMN bytes; return a CheckReport. Never raises for bad input."""
    from app.processes.registry import SERVICES
    from app.processes.sandbox import validate_expression

    report = CheckReport()
    if len(content) > MAX_FILE_BYTES:
        report.file_error = finding_text("file_too_large", limit_mb=MAX_FILE_BYTES // 1024 // 1024)
        return report
    if DTD_PATTERN.search(content):
        # The engine parses the file again with SpiffWorkflow's own parser; no BPMN tool writes a DTD.
        report.file_error = finding_text("file_doctype")
        report.has_dtd = True
        return report
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, remove_comments=True)
    try:
        root = etree.fromstring(content, parser)
    except etree.XMLSyntaxError as error:
        report.file_error = finding_text("file_not_xml", detail=error)
        return report
    if etree.QName(root).namespace != BPMN_NS or _local(root) != "definitions":
        report.file_error = finding_text("file_not_bpmn")
        return report

    for process in _bpmn_children(root, "process"):
        # Like the engine, a process counts as executable unless it says isExecutable="false".
        executable = process.get("isExecutable", "true") != "false"
        target = report.executable_processes if executable else report.documentation_processes
        target.append(process.get("id", "(no id)"))
        if executable:
            _check_process(process, report.findings, set(SERVICES), validate_expression)
    if report.executable_processes:
        for element in root.iter(f"{{{BPMN_NS}}}dataStore"):
            report.findings.append(_finding(element, finding_text(UNSUPPORTED["dataStoreReference"])))
    if not report.findings and report.executable_processes:
        report.findings.extend(_spiff_findings(content, report.executable_processes))
    return report

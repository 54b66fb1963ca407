"""SpiffWorkflow 3.2.0 wrapper: parsing and deploy checks, the sandboxed script engine, service calls and serialization.

The library's own script engine runs BPMN expressions with Python `eval`/`exec`; here
every expression goes through app.processes.sandbox instead, DMN table cells included.
Service tasks dispatch to the named functions in app.processes.registry, and business
rule tasks evaluate the company's escalation decision table (app.processes.dmn). The
script engine is not part of the serialized state, so `load_workflow` attaches a new
one on every load.
"""

import functools
import hashlib
import json
import logging
import weakref
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from uuid import UUID

from lxml import etree
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.bpmn.parser.util import full_tag
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.serializer.default.workflow import BpmnWorkflowConverter, WorkflowConverter
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.spiff.parser import VALIDATOR, SpiffBpmnParser
from SpiffWorkflow.spiff.parser.task_spec import BusinessRuleTaskParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.spiff.serializer.task_spec import BusinessRuleTaskConverter
from SpiffWorkflow.spiff.specs.defaults import BusinessRuleTask
from SpiffWorkflow.util.task import TaskState

from app.i18n import M_, Message, message_of, translate_label
from app.processes.dmn import DECISION_IDS, check_table, referenced_decisions, template_xml
from app.processes.fields import TASK_FORMS
from app.processes.messages import (
    EXPRESSION_KINDS, RUN_FAILED, RUN_SUBJECTS, SERVICE_SUBJECT, choices, engine_failure, finding_text, sandbox_error_text,
)
from app.processes.registry import SERVICES, ServiceError, escalation_outcome
from app.processes.sandbox import SandboxError, evaluate_expression, execute_script, validate_expression, validate_script

logger = logging.getLogger(__name__)

# Lane names a diagram may use: each is a role code resolved at run time.
KNOWN_LANES = {"clerk", "company_approver", "finance", "group_approver", "field_staff"}
# Values of a user task's `form` property that the inbox can render and validate.
KNOWN_FORMS = set(TASK_FORMS)


class ProcessRunError(RuntimeError):
    """The engine failed while running an instance (an expression, a service call or the library).

    str() is the English technical text. `failure` is set when a sandbox error caused it:
    {"subject", "element", "code", "params"}, stored with the error event so that
    app.processes.messages.run_failure_text can show it in the reader's language.
    """

    def __init__(self, message, failure=None):
        super().__init__(message)
        self.failure = failure


@dataclass(frozen=True)
class Finding:
    """One deploy-time problem of a diagram: the BPMN element id and type, and the text from app.processes.messages."""

    element_id: str
    reason: str
    tag: str = ""

    def __str__(self):
        kind = f"（{self.tag}）" if self.tag else ""
        return f"{self.element_id}{kind}：{self.reason}"


class ModelValidationError(ValueError):
    """A diagram that cannot be deployed; `findings` lists every problem found."""

    def __init__(self, findings):
        self.findings = list(findings)
        super().__init__("流程图不能部署：" + "；".join(str(f) for f in self.findings))


@dataclass
class RunContext:
    """Context of a service call besides task data: the instance, the acting user and the task they completed."""

    instance: object
    user: object = None
    task: object = None
    # The instance's account once a service task has locked it. Holding it here keeps it in
    # the session's identity map, which references unchanged rows weakly, so later reads of
    # the account in the same step, such as the finished event's, send no SELECT.
    account: object = None


class EscalationRuleTask(BusinessRuleTask):
    """Business rule task that turns the collected rows of an escalation table into one decision.

    With hit policy COLLECT, SpiffWorkflow returns a list per output. The task sets
    `escalate` to whether any matched row outputs True and `escalation_reason` to the joined
    reasons of those rows (app.processes.registry.escalation_outcome), so the gateways
    after it read plain values.
    """

    def _run_hook(self, my_task):
        try:
            result = self.dmnEngine.result(my_task)
        except SpiffWorkflowException as error:
            error.add_note(f"Business rule task {self.bpmn_id} calls decision table {self.dmnEngine.decision_table.id}.")
            raise
        except Exception as error:
            raise WorkflowTaskException(str(error), task=my_task, exception=error) from error
        my_task.data.update(my_task.workflow.script_engine.decide_escalation(my_task, result))
        return True


class EscalationRuleTaskParser(BusinessRuleTaskParser):
    """Parser of businessRuleTask that builds EscalationRuleTask (the library's parser names its class directly)."""

    def create_task(self):
        extensions = self.parse_extensions()
        return EscalationRuleTask(
            self.spec,
            self.bpmn_id,
            dmnEngine=self.process_parser.parser.get_engine(self.get_decision_ref(self.node), self.node),
            prescript=extensions.get("preScript"),
            postscript=extensions.get("postScript"),
            **self.bpmn_attributes,
        )


class HeatflowParser(SpiffBpmnParser):
    """The spiff parser with business rule tasks that evaluate escalation tables."""

    OVERRIDE_PARSER_CLASSES = {
        **SpiffBpmnParser.OVERRIDE_PARSER_CLASSES,
        full_tag("businessRuleTask"): (EscalationRuleTaskParser, EscalationRuleTask),
    }


def _decision_sources(bpmn_xml, decisions):
    """(decision id, DMN text) pairs for the diagram: `decisions` (a mapping) or else the group templates."""
    if decisions is not None:
        return sorted(decisions.items())
    return [(decision_id, template_xml(DECISION_IDS[decision_id])) for decision_id in referenced_decisions(bpmn_xml) if decision_id in DECISION_IDS]


def parse_model(bpmn_xml, process_id, decisions=None):
    """Parse a diagram with the spiff parser; return (spec, subprocess specs) or raise ModelValidationError.

    `decisions` maps decision id -> DMN text for the business rule tasks; None uses the
    group templates in bpmn/ for every decision the diagram calls.
    """
    parser = HeatflowParser(validator=VALIDATOR)
    try:
        parser.add_bpmn_str(bpmn_xml.encode("utf-8"), filename=f"{process_id}.bpmn")
        for decision_id, dmn_xml in _decision_sources(bpmn_xml, decisions):
            parser.add_dmn_str(dmn_xml.encode("utf-8"), filename=f"{decision_id}.dmn")
        if process_id not in parser.get_process_ids():
            found = choices(parser.get_process_ids())
            raise ModelValidationError([Finding(process_id, finding_text("process_not_found", process_id=process_id, found=found), "process")])
        return parser.get_spec(process_id), parser.get_subprocess_specs(process_id)
    except ValidationException as error:
        element = getattr(error, "id", "") or getattr(error, "tag", "") or process_id
        tag = str(getattr(error, "tag", "") or "").split("}")[-1]
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelValidationError([Finding(element, finding_text("engine_rejected", detail=detail), tag)]) from error
    except etree.XMLSyntaxError as error:
        raise ModelValidationError([Finding(process_id, finding_text("file_not_xml", detail=error), "definitions")]) from error
    except (KeyError, TypeError, AttributeError) as error:
        # Some parse failures of SpiffWorkflow 3.2.0 escape as plain Python errors.
        detail = f"{type(error).__name__}: {error}"
        raise ModelValidationError([Finding(process_id, finding_text("engine_failed", detail=detail), "process")]) from error


def validate_model(bpmn_xml, process_id, decisions=None):
    """Parse a diagram with its decision tables and check both against our rules; raise ModelValidationError listing every finding."""
    findings = []
    for decision_id, dmn_xml in _decision_sources(bpmn_xml, decisions):
        process_type = DECISION_IDS.get(decision_id)
        if process_type is None:
            findings.append(Finding(decision_id, finding_text("decision_not_escalation", decision_id=decision_id, choices=choices(DECISION_IDS)), "decision"))
            continue
        findings.extend(Finding(problem.element_id, problem.message, "decision") for problem in check_table(process_type, dmn_xml))
    if findings:
        raise ModelValidationError(findings)
    spec, subprocess_specs = parse_model(bpmn_xml, process_id, decisions)
    for task_spec in _all_task_specs(spec, subprocess_specs):
        findings.extend(_check_task_spec(task_spec))
    if findings:
        raise ModelValidationError(findings)
    return spec, subprocess_specs


# A one-task process that calls a decision, for evaluating a table on its own.
_DECISION_PROBE = """<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL"
    xmlns:spiffworkflow="http://spiffworkflow.org/bpmn/schema/1.0/core" id="probe_definitions" targetNamespace="probe">
  <bpmn:process id="decision_probe" isExecutable="true">
    <bpmn:startEvent id="probe_start"><bpmn:outgoing>probe_to_decision</bpmn:outgoing></bpmn:startEvent>
    <bpmn:businessRuleTask id="probe_decision">
      <bpmn:extensionElements><spiffworkflow:calledDecisionId>{decision_id}</spiffworkflow:calledDecisionId></bpmn:extensionElements>
      <bpmn:incoming>probe_to_decision</bpmn:incoming><bpmn:outgoing>probe_to_end</bpmn:outgoing>
    </bpmn:businessRuleTask>
    <bpmn:endEvent id="probe_end"><bpmn:incoming>probe_to_end</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="probe_to_decision" sourceRef="probe_start" targetRef="probe_decision" />
    <bpmn:sequenceFlow id="probe_to_end" sourceRef="probe_decision" targetRef="probe_end" />
  </bpmn:process>
</bpmn:definitions>
"""


def evaluate_decision(decision_id, dmn_xml, data):
    """Evaluate one decision table on task data through the engine, as a business rule task would; returns the task data after it.

    No instance is involved, so no `escalated` event is recorded.
    """
    spec, subprocess_specs = parse_model(_DECISION_PROBE.format(decision_id=decision_id), "decision_probe", {decision_id: dmn_xml})
    workflow = new_workflow(spec, subprocess_specs, RunContext(None), data)
    run_engine(workflow)
    return dict(workflow.data)


def _all_task_specs(spec, subprocess_specs):
    yield from spec.task_specs.values()
    for sub in subprocess_specs.values():
        yield from sub.task_specs.values()


# Task spec classes whose BPMN element name is not the class name with a lower-case first letter.
_SPEC_TAGS = {EscalationRuleTask: "businessRuleTask"}


def _element_tag(task_spec):
    """BPMN element name of a task spec, e.g. userTask, serviceTask, exclusiveGateway."""
    kind = type(task_spec)
    return _SPEC_TAGS.get(kind) or kind.__name__[:1].lower() + kind.__name__[1:]


def _check_task_spec(task_spec):
    element = getattr(task_spec, "bpmn_id", None)
    if element is None:
        return []
    tag = _element_tag(task_spec)
    findings = []
    lane = getattr(task_spec, "lane", None)
    if lane is not None and lane not in KNOWN_LANES:
        findings.append(Finding(element, finding_text("lane_unknown", lane=lane, choices=choices(sorted(KNOWN_LANES))), tag))
    extensions = getattr(task_spec, "extensions", None) or {}
    operator = extensions.get("serviceTaskOperator")
    if operator is not None:
        findings.extend(_check_operator(element, tag, operator))
    if getattr(task_spec, "manual", False):
        form = (extensions.get("properties") or {}).get("form")
        if form is None:
            findings.append(Finding(element, finding_text("form_missing", choices=choices(sorted(KNOWN_FORMS))), tag))
        elif form not in KNOWN_FORMS:
            findings.append(Finding(element, finding_text("form_unknown", form=form, choices=choices(sorted(KNOWN_FORMS))), tag))
        if lane is None:
            findings.append(Finding(element, finding_text("user_task_outside_lane"), tag))
    for condition, _target in getattr(task_spec, "cond_task_specs", []):
        if condition is not None:
            findings.extend(_check_source(element, tag, condition.args[0], validate_expression, "condition"))
    for attribute in ("script", "prescript", "postscript"):
        source = getattr(task_spec, attribute, None)
        if source:
            findings.extend(_check_source(element, tag, source, validate_script, attribute))
    return findings


def _check_operator(element, tag, operator):
    name = operator["name"]
    service = SERVICES.get(name)
    if service is None:
        return [Finding(element, finding_text("service_unknown", name=name, choices=choices(sorted(SERVICES))), tag)]
    findings = []
    passed = set(operator["parameters"])
    missing = set(service.inputs) - service.optional - passed
    unknown = passed - set(service.inputs)
    if missing:
        findings.append(Finding(element, finding_text("service_missing_parameters", name=name, names=choices(sorted(missing))), tag))
    if unknown:
        findings.append(Finding(element, finding_text("service_unknown_parameters", name=name, names=choices(sorted(unknown))), tag))
    for parameter in operator["parameters"].values():
        findings.extend(_check_source(element, tag, parameter["value"], validate_expression, "parameter"))
    return findings


def _check_source(element, tag, source, check, kind):
    try:
        check(source)
    except SandboxError as error:
        text = finding_text("expression_rejected", what=translate_label(EXPRESSION_KINDS[kind]), source=str(source)[:80], detail=sandbox_error_text(error))
        return [Finding(element, text, tag)]
    return []


class SandboxEnvironment(BasePythonScriptEngineEnvironment):
    """Script environment that evaluates through the sandbox and dispatches service calls to the registry."""

    def __init__(self, context):
        super().__init__({})
        self.context = context

    def evaluate(self, expression, context, external_context=None):
        data = dict(external_context or {})
        data.update(context)
        return evaluate_expression(expression, data, {"deadline": self._deadline})

    def _deadline(self, key):
        from app.processes.timers import TIMER_KEYS, deadline

        if key not in TIMER_KEYS:
            raise SandboxError(
                f"deadline({key!r}) names no timer key; known keys: {', '.join(TIMER_KEYS)}.",
                "deadline_key", key=repr(key), keys=", ".join(TIMER_KEYS),
            )
        try:
            return deadline(self.context.instance.company_id, key)
        except LookupError as error:
            raise SandboxError(str(error), "deadline_missing", key=repr(key)) from error

    def execute(self, script, context, external_context=None):
        execute_script(script, context)
        return True

    def call_service(self, context, operation_name=None, operation_params=None):
        service = SERVICES.get(operation_name)
        if service is None:
            raise ServiceError(f"Service operator {operation_name!r} is not registered.")
        arguments = {name: spec["value"] for name, spec in (operation_params or {}).items()}
        outputs = service.function(self.context, **arguments)
        context.update(outputs)
        return json.dumps({"service": operation_name, "outputs": sorted(outputs)})


class SandboxScriptEngine(PythonScriptEngine):
    """Script engine whose errors name the BPMN element and keep the real cause.

    It replaces the library's `call_service` error handler, which in 3.2.0 refers to an
    undefined variable and turns every service failure into a NameError.
    """

    def __init__(self, context):
        super().__init__(environment=SandboxEnvironment(context))

    def evaluate(self, task, expression, external_context=None):
        try:
            return self.environment.evaluate(expression, task.data, external_context)
        except SandboxError as error:
            raise _run_error(task, "expression", error) from error

    def execute(self, task, script, external_context=None):
        try:
            return self.environment.execute(script, task.data, external_context)
        except SandboxError as error:
            raise _run_error(task, "script", error) from error

    def decide_escalation(self, task, result):
        """Turn a decision table's result into `escalate` and `escalation_reason`, recording an `escalated` event."""
        return escalation_outcome(self.environment.context, result)

    def call_service(self, task, **kwargs):
        try:
            return self.environment.call_service(task.data, **kwargs)
        except ProcessRunError:
            raise
        except Exception as error:
            raise _run_error(task, "service", error, service=kwargs.get("operation_name")) from error


def _run_error(task, subject, error, service=None):
    """Wrap an error of an expression, script or service call (`subject`) of `task` in a ProcessRunError.

    A sandbox error with a code keeps its English text and is stored as a run failure that
    pages translate. Any other error becomes a Message, with the error's own text as the reason.
    """
    element = getattr(task.task_spec, "bpmn_id", None) or task.task_spec.name
    message = message_of(error)
    if message is not None:
        # A ServiceError for the approver: keep it a Message, so pages and the history translate it.
        return ProcessRunError(M_("步骤 %(element)s 未能完成：%(error)s", element=element, error=message))
    if isinstance(error, SandboxError) and error.code:
        failure = {"subject": subject, "element": str(element), "code": error.code, "params": error.params}
        return ProcessRunError(f"{subject} of element {element} failed: {error}", failure)
    label = Message(SERVICE_SUBJECT, name=repr(service)) if subject == "service" else RUN_SUBJECTS[subject]
    return ProcessRunError(M_(RUN_FAILED, element=str(element), subject=label, reason=str(error)))


class ReferencedSpecWorkflowConverter(BpmnWorkflowConverter):
    """Workflow converter that writes `spec_digest` in place of the serialized spec.

    The spec of a deployed version is the same for all its instances and was about 60 % of
    each state, so it is stored once (app.processes.specs) and `load_workflow` passes the
    restored spec objects in as `spec_objects`. A document that still embeds `spec` (saved
    before this form existed) is restored by the library's own code.
    """

    def to_dict(self, workflow):
        dct = WorkflowConverter.to_dict(self, workflow)
        dct["spec_digest"] = spec_document(workflow)[0]
        dct["subprocesses"] = self.mapping_to_dict(workflow.subprocesses)
        dct["bpmn_events"] = self.registry.convert(workflow.bpmn_events)
        return dct

    def from_dict(self, dct):
        if "spec_digest" not in dct:
            return super().from_dict(dct)
        dct.pop("spec_digest")
        spec, subprocess_specs = dct.pop("spec_objects")
        workflow = self.target_class(spec, subprocess_specs, deserializing=True)
        workflow.tasks = self.mapping_from_dict(dct["tasks"], UUID, workflow=workflow)
        workflow.task_tree = workflow.tasks.get(UUID(dct["root"]))
        self.set_default_attributes(workflow, dct)
        self.subprocesses_from_dict(dct["subprocesses"], workflow)
        workflow.bpmn_events = self.registry.restore(dct.pop("bpmn_events", []))
        return workflow


def _build_serializer():
    registry = BpmnWorkflowSerializer.configure({
        **SPIFF_CONFIG, EscalationRuleTask: BusinessRuleTaskConverter, BpmnWorkflow: ReferencedSpecWorkflowConverter,
    })
    # Task data contains amounts as Decimal and dates as date, and the default registry converts neither.
    registry.register(Decimal, lambda value: {"value": str(value)}, lambda dct: Decimal(dct["value"]))
    registry.register(date, lambda value: {"value": value.isoformat()}, lambda dct: date.fromisoformat(dct["value"]))
    return BpmnWorkflowSerializer(registry)


SERIALIZER = _build_serializer()


def new_workflow(spec, subprocess_specs, context, start_data):
    """Create a workflow and put `start_data` on its READY start task."""
    workflow = BpmnWorkflow(spec, subprocess_specs, script_engine=SandboxScriptEngine(context))
    start = workflow.get_next_task(state=TaskState.READY)
    start.data.update(start_data)
    return workflow


def run_engine(workflow):
    """Run every READY automatic task; library failures become ProcessRunError."""
    try:
        workflow.do_engine_steps()
    except SpiffWorkflowException as error:
        raise ProcessRunError(engine_failure(error)) from error


# Spec object -> (a copy of its subprocess specs mapping, digest, document) of the last serialization.
_SPEC_DOCUMENTS = weakref.WeakKeyDictionary()


def spec_document(workflow):
    """Return (sha256 digest, JSON document) of a workflow's spec and subprocess specs, computed once per spec object.

    A migration replaces `workflow.spec` and `workflow.subprocess_specs`, so the cache entry
    is checked against both. The subprocess specs are compared object by object, not as one
    mapping, because BpmnWorkflow replaces an empty mapping with a new `{}` on every load.
    """
    entry = _SPEC_DOCUMENTS.get(workflow.spec)
    if entry is not None and _same_specs(entry[0], workflow.subprocess_specs):
        return entry[1], entry[2]
    registry = SERIALIZER.registry
    registry._encoder_mode = True
    try:
        document = {
            "spec": registry.convert(workflow.spec),
            "subprocess_specs": {name: registry.convert(spec) for name, spec in workflow.subprocess_specs.items()},
        }
        text = json.dumps(document, cls=SERIALIZER._encoder_cls, sort_keys=True)
    finally:
        registry._encoder_mode = False
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    _SPEC_DOCUMENTS[workflow.spec] = (dict(workflow.subprocess_specs), digest, text)
    _remember_document(digest, text)
    return digest, text


def _same_specs(cached, current):
    """True when two name -> spec mappings hold the same spec objects under the same names."""
    return cached.keys() == current.keys() and all(cached[name] is current[name] for name in cached)


# Digest -> document of specs serialized or read in this process; the digest fixes the content.
_KNOWN_DOCUMENTS = {}
_KNOWN_DOCUMENTS_MAX = 256


def _remember_document(digest, text):
    if len(_KNOWN_DOCUMENTS) >= _KNOWN_DOCUMENTS_MAX:
        _KNOWN_DOCUMENTS.clear()
    _KNOWN_DOCUMENTS[digest] = text


@functools.lru_cache(maxsize=64)
def _restored_spec(digest):
    """Restore (spec, subprocess specs) from a stored document once per digest; the objects are shared like parsed specs."""
    text = _KNOWN_DOCUMENTS.get(digest)
    if text is None:
        from app.processes.specs import stored_document

        text = stored_document(digest)
        if text is None:
            raise ProcessRunError(f"The workflow spec {digest[:12]} referenced by the stored state is missing from process_spec.")
        _remember_document(digest, text)
    document = json.loads(text)
    registry = SERIALIZER.registry
    spec = registry.restore(document["spec"])
    subprocess_specs = {name: registry.restore(sub) for name, sub in document["subprocess_specs"].items()}
    return spec, subprocess_specs


def dump_workflow(workflow):
    """Serialize a workflow to JSON text that references its spec by `spec_digest` (see ReferencedSpecWorkflowConverter)."""
    return SERIALIZER.serialize_json(workflow)


def load_workflow(state, context):
    """Restore a workflow from JSON text, referenced or embedded spec alike, and attach a new sandboxed script engine.

    `workflow.loaded_spec_digest` is the digest the state referenced (None for an embedded
    spec), so a save can skip storing a spec that is already stored.
    """
    try:
        document = json.loads(state)
        SERIALIZER.migrate(document)
        digest = document.get("spec_digest")
        if digest is not None:
            document["spec_objects"] = _restored_spec(digest)
        workflow = SERIALIZER.from_dict(document)
    except (ValueError, KeyError, TypeError) as error:
        raise ProcessRunError(f"The stored workflow state cannot be loaded: {error}") from error
    workflow.loaded_spec_digest = digest
    workflow.script_engine = SandboxScriptEngine(context)
    return workflow

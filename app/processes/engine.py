"""SpiffWorkflow 3.2.0 wrapper: parsing and deploy checks, the sandboxed script engine, service calls and serialization.

The library's own script engine runs BPMN expressions with Python `eval`/`exec`; here
every expression goes through app.processes.sandbox instead, DMN table cells included.
Service tasks dispatch to the named functions in app.processes.registry, and business
rule tasks evaluate the company's escalation decision table (app.processes.dmn). The
script engine is not part of the serialized state, so `load_workflow` attaches a new
one on every load.
"""

import json
import logging
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from lxml import etree
from SpiffWorkflow.bpmn.exceptions import WorkflowTaskException
from SpiffWorkflow.bpmn.parser.ValidationException import ValidationException
from SpiffWorkflow.bpmn.parser.util import full_tag
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.script_engine.python_environment import BasePythonScriptEngineEnvironment
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.workflow import BpmnWorkflow
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.spiff.parser import VALIDATOR, SpiffBpmnParser
from SpiffWorkflow.spiff.parser.task_spec import BusinessRuleTaskParser
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.spiff.serializer.task_spec import BusinessRuleTaskConverter
from SpiffWorkflow.spiff.specs.defaults import BusinessRuleTask
from SpiffWorkflow.util.task import TaskState

from app.processes.dmn import DECISION_IDS, check_table, referenced_decisions, template_xml
from app.processes.fields import TASK_FORMS
from app.processes.registry import SERVICES, ServiceError, escalation_outcome
from app.processes.sandbox import SandboxError, evaluate_expression, execute_script, validate_expression, validate_script

logger = logging.getLogger(__name__)

# Lane names a diagram may use: each is a role code resolved at run time.
KNOWN_LANES = {"clerk", "company_approver", "finance", "group_approver", "field_staff"}
# Values of a user task's `form` property that the inbox can render and validate.
KNOWN_FORMS = set(TASK_FORMS)


class ProcessRunError(RuntimeError):
    """The engine failed while running an instance (an expression, a service call or the library)."""


@dataclass(frozen=True)
class Finding:
    """One deploy-time problem of a diagram, tied to a BPMN element id."""

    element_id: str
    reason: str

    def __str__(self):
        return f"{self.element_id}: {self.reason}"


class ModelValidationError(ValueError):
    """A diagram that cannot be deployed; `findings` lists every problem found."""

    def __init__(self, findings):
        self.findings = list(findings)
        super().__init__("The BPMN model cannot be deployed: " + "; ".join(str(f) for f in self.findings))


@dataclass
class RunContext:
    """Context of a service call besides task data: the instance, the acting user and the task they completed."""

    instance: object
    user: object = None
    task: object = None


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
            found = ", ".join(parser.get_process_ids()) or "none"
            raise ModelValidationError([Finding(process_id, f"no executable process with this id (found: {found})")])
        return parser.get_spec(process_id), parser.get_subprocess_specs(process_id)
    except ValidationException as error:
        element = getattr(error, "id", "") or getattr(error, "tag", "") or process_id
        raise ModelValidationError([Finding(element, str(error).strip())]) from error
    except etree.XMLSyntaxError as error:
        raise ModelValidationError([Finding(process_id, f"the file is not well-formed XML: {error}")]) from error
    except (KeyError, TypeError, AttributeError) as error:
        # Some parse failures of SpiffWorkflow 3.2.0 escape as plain Python errors.
        raise ModelValidationError([Finding(process_id, f"the parser failed: {type(error).__name__}: {error}")]) from error


def validate_model(bpmn_xml, process_id, decisions=None):
    """Parse a diagram with its decision tables and check both against our rules; raise ModelValidationError listing every finding."""
    findings = []
    for decision_id, dmn_xml in _decision_sources(bpmn_xml, decisions):
        process_type = DECISION_IDS.get(decision_id)
        if process_type is None:
            findings.append(Finding(decision_id, f"decision {decision_id!r} is not an escalation table; use one of {', '.join(DECISION_IDS)}"))
            continue
        findings.extend(Finding(problem.element_id, problem.message) for problem in check_table(process_type, dmn_xml))
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


def _check_task_spec(task_spec):
    element = getattr(task_spec, "bpmn_id", None)
    if element is None:
        return []
    findings = []
    lane = getattr(task_spec, "lane", None)
    if lane is not None and lane not in KNOWN_LANES:
        findings.append(Finding(element, f"lane {lane!r} is not a known role; use one of {', '.join(sorted(KNOWN_LANES))}"))
    extensions = getattr(task_spec, "extensions", None) or {}
    operator = extensions.get("serviceTaskOperator")
    if operator is not None:
        findings.extend(_check_operator(element, operator))
    if getattr(task_spec, "manual", False):
        form = (extensions.get("properties") or {}).get("form")
        if form not in KNOWN_FORMS:
            findings.append(Finding(element, f"user task form {form!r} is unknown; set the property form to one of {', '.join(sorted(KNOWN_FORMS))}"))
        if lane is None:
            findings.append(Finding(element, "user task is outside every lane; put it in the lane of the role that does it"))
    for condition, _target in getattr(task_spec, "cond_task_specs", []):
        if condition is not None:
            findings.extend(_check_source(element, condition.args[0], validate_expression, "condition"))
    for attribute in ("script", "prescript", "postscript"):
        source = getattr(task_spec, attribute, None)
        if source:
            findings.extend(_check_source(element, source, validate_script, attribute))
    return findings


def _check_operator(element, operator):
    name = operator["name"]
    service = SERVICES.get(name)
    if service is None:
        return [Finding(element, f"service operator {name!r} is not registered; known operators: {', '.join(sorted(SERVICES))}")]
    findings = []
    passed = set(operator["parameters"])
    missing = set(service.inputs) - service.optional - passed
    unknown = passed - set(service.inputs)
    if missing:
        findings.append(Finding(element, f"service {name!r} lacks parameters {', '.join(sorted(missing))}"))
    if unknown:
        findings.append(Finding(element, f"service {name!r} takes no parameters {', '.join(sorted(unknown))}"))
    for parameter in operator["parameters"].values():
        findings.extend(_check_source(element, parameter["value"], validate_expression, "parameter"))
    return findings


def _check_source(element, source, check, kind):
    try:
        check(source)
    except SandboxError as error:
        return [Finding(element, f"{kind} rejected: {error}")]
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
            raise SandboxError(f"deadline({key!r}) names no timer key; known keys: {', '.join(TIMER_KEYS)}.")
        try:
            return deadline(self.context.instance.company_id, key)
        except LookupError as error:
            raise SandboxError(str(error)) from error

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
            raise _run_error(task, f"service {kwargs.get('operation_name')!r}", error) from error


def _run_error(task, subject, error):
    element = getattr(task.task_spec, "bpmn_id", None) or task.task_spec.name
    return ProcessRunError(f"{subject} of element {element} failed: {error}")


def _build_serializer():
    registry = BpmnWorkflowSerializer.configure({**SPIFF_CONFIG, EscalationRuleTask: BusinessRuleTaskConverter})
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
        raise ProcessRunError(f"The workflow engine failed: {error}") from error


def dump_workflow(workflow):
    """Serialize a workflow to JSON text."""
    # TODO: store the spec once per model version and reference it here; it is about 60 % of every state.
    return SERIALIZER.serialize_json(workflow)


def load_workflow(state, context):
    """Restore a workflow from JSON text and attach a new sandboxed script engine."""
    try:
        workflow = SERIALIZER.deserialize_json(state)
    except (ValueError, KeyError, TypeError) as error:
        raise ProcessRunError(f"The stored workflow state cannot be loaded: {error}") from error
    workflow.script_engine = SandboxScriptEngine(context)
    return workflow

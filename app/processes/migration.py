"""Moving running instances to a newer version of their company's process model.

An instance can move when every element it waits in (READY user tasks and WAITING
timer or catch events) exists in the target version, under the same BPMN id or under
the id an explicit element mapping gives. The workflow keeps its history and task
data. SpiffWorkflow 3.2.0's spec diff aligns the task specs, `migrate_workflow` swaps
them, and waiting tasks are re-predicted from the new diagram. Each instance moves in
its own transaction under its row lock and gets a `migrated` audit event. A rejected
instance is left untouched and reported with the reason.
"""

import logging
from dataclasses import dataclass
from uuid import UUID

import sqlalchemy as sa
from SpiffWorkflow.bpmn.util.diff import diff_workflow, migrate_workflow
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.util.task import TaskState
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import translate_label
from app.locking import lock_row
from app.org.services import require_permission
from app.processes.access import ConflictError, InputError
from app.processes.audit import record_event
from app.processes.deployment import spec_for
from app.processes.engine import SERIALIZER, ProcessRunError, RunContext, dump_workflow, load_workflow, run_engine
from app.processes.models import ACTIVE_STATUSES, PROCESS_TYPES, HumanTask, ProcessInstance, ProcessModel
from app.texts import clean_text

logger = logging.getLogger(__name__)

MAX_MAPPING_PAIRS = 50


@dataclass(frozen=True)
class MigrationResult:
    """Outcome for one instance: migrated, or the reason it was rejected."""

    instance_id: int
    migrated: bool
    reason: str = ""


def parse_mapping(text):
    """Parse an element mapping written as lines `old_id=new_id`; returns {old: new} or raises InputError."""
    mapping = {}
    for number, raw in enumerate((text or "").splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        old, separator, new = line.partition("=")
        old, new = old.strip(), new.strip()
        if not separator or not old or not new:
            raise InputError(_("元素映射第 %(line)s 行「%(value)s」无效：请按「旧元素ID=新元素ID」每行填写一对。", line=number, value=line[:60]))
        if old in mapping:
            raise InputError(_("元素映射第 %(line)s 行重复映射了元素「%(value)s」，每个旧元素只能映射一次。", line=number, value=old[:60]))
        mapping[old] = new
    if len(mapping) > MAX_MAPPING_PAIRS:
        raise InputError(_("元素映射共 %(count)s 对，超过 %(max)s 对上限。", count=len(mapping), max=MAX_MAPPING_PAIRS))
    return mapping


def model_versions(company_id):
    """Deployed versions of a company's models with their active instance counts, as {process type: [(version, status, count)]}."""
    counts = dict(db.session.execute(
        sa.select(ProcessInstance.model_id, sa.func.count(ProcessInstance.id))
        .where(ProcessInstance.company_id == company_id, ProcessInstance.status.in_(ACTIVE_STATUSES))
        .group_by(ProcessInstance.model_id)
    ).all())
    versions = {}
    models = db.session.scalars(
        sa.select(ProcessModel).where(ProcessModel.company_id == company_id).order_by(ProcessModel.process_type, ProcessModel.version)
    )
    for model in models:
        versions.setdefault(model.process_type, []).append((model.version, model.status, counts.get(model.id, 0)))
    return versions


def _model(company_id, process_type, version):
    return db.session.scalar(
        sa.select(ProcessModel).where(
            ProcessModel.company_id == company_id, ProcessModel.process_type == process_type, ProcessModel.version == version
        )
    )


def _waiting_tasks(workflow):
    """Tasks an instance is waiting in: READY user tasks and WAITING events."""
    ready = workflow.get_tasks(state=TaskState.READY, manual=True)
    waiting = [task for task in workflow.get_tasks(state=TaskState.WAITING) if getattr(task.task_spec, "event_definition", None)]
    return [*ready, *waiting]


def _expand_mapping(mapping, source_spec, target_spec):
    """Add the engine's helper specs of each mapped element (e.g. `X.BoundaryEventSplit`) under the new element's name."""
    expanded = dict(mapping)
    for old_name, new_name in mapping.items():
        for name in source_spec.task_specs:
            if name.startswith(old_name + "."):
                derived = new_name + name[len(old_name):]
                if derived in target_spec.task_specs:
                    expanded.setdefault(name, derived)
    return expanded


def _plan(workflow, target_spec, target_subprocesses, mapping):
    """Return (diff, None) when the workflow can move to `target_spec`, else (None, the reason in the reader's language)."""
    registry = SERIALIZER.registry
    diff, sub_diffs = diff_workflow(registry, workflow, target_spec, target_subprocesses)
    if any(sub_diff is None for sub_diff in sub_diffs.values()):
        return None, _("流程包含子流程，而目标版本中没有对应的子流程定义。")
    for old_name, new_name in mapping.items():
        if new_name not in target_spec.task_specs:
            return None, _("元素映射「%(old)s=%(new)s」中的新元素在目标版本中不存在。", old=old_name, new=new_name)
    expanded = _expand_mapping(mapping, workflow.spec, target_spec)
    for task in workflow.get_tasks(skip_subprocesses=True):
        if task.task_spec.name in expanded:
            diff.alignment[task] = target_spec.task_specs[expanded[task.task_spec.name]]
    problems = []
    for task in _waiting_tasks(workflow):
        name = task.task_spec.name
        aligned = diff.alignment.get(task)
        if aligned is None or (aligned.name != name and name not in expanded):
            title = task.task_spec.bpmn_name or name
            problems.append(_("当前环节「%(title)s」（%(name)s）在目标版本中不存在，请提供元素映射", title=title, name=name))
    if problems:
        return None, _("%(problems)s。", problems=_("；").join(problems))
    return diff, None


def migrate_instances(company_id, process_type, from_version, to_version, user, reason, mapping=None, instance_ids=None):
    """Move the active instances of a company's process from one version to a newer one; returns a MigrationResult per instance.

    Needs process.admin in the company and a reason. `instance_ids` limits the move to
    those instances. Raises InputError for a missing reason or version, and
    ConflictError when `to_version` is not newer than `from_version`.
    """
    from app.processes.services import _sync_and_save

    require_permission(user, "process.admin", company_id)
    text = clean_text(reason)
    if not text:
        raise InputError(_("请填写迁移流程版本的原因。"))
    if process_type not in PROCESS_TYPES:
        raise InputError(_("未知的业务类型「%(value)s」。", value=str(process_type)[:32]))
    label = PROCESS_TYPES[process_type]
    source, target = _model(company_id, process_type, from_version), _model(company_id, process_type, to_version)
    if source is None or target is None:
        missing = from_version if source is None else to_version
        raise InputError(_("本公司%(process)s流程没有版本 %(version)s；请从版本列表中选择。", process=translate_label(label), version=missing))
    if to_version <= from_version:
        raise ConflictError(_("只能迁移到更新的版本：版本 %(new)s 不比版本 %(old)s 新。", new=to_version, old=from_version))
    mapping = dict(mapping or {})
    statement = (
        sa.select(ProcessInstance.id)
        .where(ProcessInstance.company_id == company_id, ProcessInstance.model_id == source.id,
               ProcessInstance.status.in_(ACTIVE_STATUSES))
        .order_by(ProcessInstance.id)
    )
    if instance_ids is not None:
        statement = statement.where(ProcessInstance.id.in_(list(instance_ids)))
    ids = list(db.session.scalars(statement))
    target_spec, target_subprocesses = spec_for(target)
    results = []
    for instance_id in ids:
        results.append(_migrate_one(instance_id, source, target, target_spec, target_subprocesses, mapping, user, text, _sync_and_save))
    logger.info(
        "User %s migrated %s of %s %s instances of company %s from version %s to %s",
        user.id, sum(r.migrated for r in results), len(results), process_type, company_id, from_version, to_version,
    )
    return results


def _rename_open_tasks(instance, workflow):
    """Point open inbox rows at their task's spec in the new version; a task that moved to another lane loses its claim."""
    open_tasks = db.session.scalars(
        sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open")
    ).all()
    for task in open_tasks:
        spiff_task = workflow.get_task_from_id(UUID(task.spiff_task_id))
        if spiff_task is None:
            continue
        spec = spiff_task.task_spec
        properties = (getattr(spec, "extensions", None) or {}).get("properties") or {}
        task.task_spec_name = spec.name
        task.title = spec.bpmn_name or spec.name
        task.form = properties.get("form", task.form)
        lane = spec.lane or "clerk"
        if lane != task.lane_role:
            task.lane_role = lane
            task.claimed_by_id = None
            task.claimed_by_name = ""


def _migrate_one(instance_id, source, target, target_spec, target_subprocesses, mapping, user, reason, sync_and_save):
    instance = lock_row(ProcessInstance, instance_id)
    if instance.model_id != source.id or instance.status not in ACTIVE_STATUSES:
        db.session.rollback()
        return MigrationResult(instance_id, False, _(
            "流程当前为「%(status)s」或已不在版本 %(version)s 上。", status=translate_label(instance.status_label), version=source.version,
        ))
    try:
        workflow = load_workflow(instance.state, RunContext(instance, user))
        diff, problem = _plan(workflow, target_spec, target_subprocesses, mapping)
        if problem:
            db.session.rollback()
            return MigrationResult(instance_id, False, problem)
        migrate_workflow(diff, workflow, target_spec)
        workflow.subprocess_specs = target_subprocesses
        run_engine(workflow)
        # A history task whose element the new version lacks would make the state unloadable; reject rather than store it.
        load_workflow(dump_workflow(workflow), RunContext(instance, user))
        _rename_open_tasks(instance, workflow)
        instance.model_id = target.id
        record_event(
            instance, "migrated", user=user, task_name=f"版本 {source.version} → {target.version}", comment=reason,
            data={"from_version": source.version, "to_version": target.version, "mapping": mapping},
        )
        sync_and_save(instance, workflow, user)
    except (ProcessRunError, SpiffWorkflowException, KeyError) as error:
        db.session.rollback()
        logger.warning("Migrating instance %s to version %s failed: %s", instance_id, target.version, error)
        return MigrationResult(instance_id, False, _("迁移时流程引擎出错：%(error)s", error=error))
    db.session.commit()
    return MigrationResult(instance_id, True)

"""Starting, claiming and completing process tasks, each under a row lock per instance.

Every change runs as load → run → save in one database transaction together with its
business effect (ledger line, account status, inbox rows, audit events). When the engine
fails, the whole transaction is rolled back and an `error` event is appended afterwards,
so nothing is half-stored and the task can be retried once the cause is fixed.
"""

import logging
import re
from uuid import UUID

import sqlalchemy as sa
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.util.task import TaskState

from app.extensions import db
from app.billing.services import account_charge_inputs, season_receivable
from app.network.models import BILLING_STATUSES, Account
from app.org.services import require_permission
from app.processes.access import ConflictError, InputError, NotFoundError, get_task, lock_row, running_instance
from app.processes.audit import record_event
from app.processes.deployment import latest_model, spec_for
from app.processes.engine import ProcessRunError, RunContext, dump_workflow, load_workflow, new_workflow, run_engine
from app.processes.models import DECISIONS, HumanTask, ProcessInstance, utcnow
from app.processes.registry import current_season
from app.tariffs.services import TariffError, compute_charge, tariff_in_force

logger = logging.getLogger(__name__)

# Reason codes the request form offers; a caller may also pass the reason as free text.
SUSPENSION_REASONS = {"vacant": "房屋空置", "renovation": "装修停用", "away": "长期外出", "other": "其他"}
MAX_REASON_CHARS = 100
VALVE_RESULTS = {"closed": "已关栓", "sealed": "已关栓并施封"}
# End events whose id starts with this prefix finish an instance as rejected.
REJECTED_END_PREFIX = "end_rejected"
MAX_COMMENT_CHARS = 500
SEAL_NO_PATTERN = re.compile(r"^[A-Za-z0-9-]{1,32}$")


def _clean_comment(comment):
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_CHARS:
        raise InputError(f"意见共 {len(comment)} 字，超过 {MAX_COMMENT_CHARS} 字上限，请精简后重新提交。")
    return comment


def start_suspension(account_id, user, reason, comment=""):
    """File a 报停 request for an account; returns the new running instance."""
    account = db.session.scalar(sa.select(Account).where(Account.id == account_id))
    if account is None:
        raise NotFoundError(f"用户 {account_id} 不存在，或不属于您所在的公司。")
    require_permission(user, "process.start", account.company_id)
    reason = (reason or "").strip()
    if not reason:
        raise InputError(f"请填写报停原因，可选 {'、'.join(SUSPENSION_REASONS.values())}，或直接填写原因。")
    if len(reason) > MAX_REASON_CHARS:
        raise InputError(f"报停原因共 {len(reason)} 字，超过 {MAX_REASON_CHARS} 字上限；详细情况请写在说明里。")
    reason_label = SUSPENSION_REASONS.get(reason, reason)
    comment = _clean_comment(comment)
    if reason == "other" and not comment:
        raise InputError("报停原因为「其他」时必须填写说明。")
    model = latest_model(account.company_id, "suspension")
    if model is None:
        raise ConflictError("本公司尚未部署报停流程，请联系管理员部署后再受理。")

    account = lock_row(Account, account.id)
    if account.billing_status != "normal":
        label = BILLING_STATUSES.get(account.billing_status, account.billing_status)
        raise ConflictError(f"该户当前供热状态为「{label}」，只有「正常」状态的用户可以申请报停。")
    running = running_instance(account.id, "suspension")
    if running is not None:
        raise ConflictError(f"该户已有办理中的报停申请（流程 {running.id}），请勿重复申请。")

    instance = ProcessInstance(
        company_id=account.company_id, model_id=model.id, process_type="suspension",
        account_id=account.id, status="running", state="", started_by_id=user.id,
    )
    db.session.add(instance)
    db.session.flush()
    record_event(
        instance, "started", user=user, task_name="报停申请", comment=comment,
        data={"reason": reason, "reason_label": reason_label, "model_version": model.version},
    )
    start_data = {
        "account_id": account.id, "account_no": account.account_no, "reason": reason_label,
        "comment": comment, "started_by": user.name,
    }
    spec, subprocess_specs = spec_for(model)
    try:
        workflow = new_workflow(spec, subprocess_specs, RunContext(instance, user), start_data)
        run_engine(workflow)
        _sync_and_save(instance, workflow, user)
    except ProcessRunError:
        db.session.rollback()
        logger.exception("Starting a suspension for account %s failed; nothing was stored", account_id)
        raise
    db.session.commit()
    logger.info("User %s started suspension instance %s for account %s", user.id, instance.id, account.id)
    return instance


def _closed_state(task):
    return "已被取消" if task.status == "cancelled" else "已办结"


def claim_task(task_id, user):
    """Claim an open task so that only this user can complete it."""
    task = get_task(task_id, user)
    instance = lock_row(ProcessInstance, task.instance_id)
    db.session.refresh(task)
    if task.status != "open":
        raise ConflictError(f"任务「{task.title}」{_closed_state(task)}，无需签收。")
    if task.claimed_by_id == user.id:
        return task
    if task.claimed_by_id is not None:
        raise ConflictError(f"任务「{task.title}」已由 {task.claimed_by_name} 签收，请等待其办理或退回。")
    task.claimed_by_id = user.id
    task.claimed_by_name = user.name
    record_event(instance, "claimed", user=user, task_name=task.title)
    db.session.commit()
    return task


def release_task(task_id, user):
    """Return a claimed task to the open pool of its lane."""
    task = get_task(task_id, user)
    instance = lock_row(ProcessInstance, task.instance_id)
    db.session.refresh(task)
    if task.status != "open" or task.claimed_by_id != user.id:
        raise ConflictError(f"任务「{task.title}」不在您名下，无法退回。")
    task.claimed_by_id = None
    task.claimed_by_name = ""
    record_event(instance, "released", user=user, task_name=task.title)
    db.session.commit()
    return task


def validate_task_input(form, values):
    """Check submitted values against a task form (approval or valve_close); returns the cleaned values."""
    comment = _clean_comment(values.get("comment"))
    if form == "approval":
        decision = values.get("decision")
        if decision not in DECISIONS:
            raise InputError("请选择审批意见：同意或驳回。")
        if decision == "reject" and not comment:
            raise InputError("驳回时必须填写意见，说明驳回原因。")
        return {"decision": decision, "comment": comment}
    result = values.get("result")
    if result not in VALVE_RESULTS:
        raise InputError(f"请选择现场结果：{'或'.join(VALVE_RESULTS.values())}。")
    seal_no = (values.get("seal_no") or "").strip()
    if not seal_no:
        raise InputError("请填写封签号。")
    if not SEAL_NO_PATTERN.match(seal_no):
        raise InputError(f"封签号「{seal_no[:40]}」无效：只能包含字母、数字和连字符，最多 32 位。")
    return {"result": result, "seal_no": seal_no, "comment": comment}


def _task_data(spiff_task, form, clean):
    """Return the task data a completed user task writes; approvals name it by the task's data_prefix property."""
    if form == "approval":
        properties = (getattr(spiff_task.task_spec, "extensions", None) or {}).get("properties") or {}
        prefix = properties.get("data_prefix") or spiff_task.task_spec.name
        return {f"{prefix}_decision": clean["decision"], f"{prefix}_comment": clean["comment"]}
    return {"valve_result": clean["result"], "seal_no": clean["seal_no"], "valve_comment": clean["comment"]}


def complete_task(task_id, user, values):
    """Complete a claimed task with the submitted form values and run the workflow to its next wait."""
    task = get_task(task_id, user)
    clean = validate_task_input(task.form, values)
    decision, comment = clean.get("decision"), clean["comment"]
    instance = lock_row(ProcessInstance, task.instance_id)
    db.session.refresh(task)
    if task.status != "open":
        raise ConflictError(f"任务「{task.title}」{_closed_state(task)}，不能重复提交。")
    if task.claimed_by_id != user.id:
        holder = f"已由 {task.claimed_by_name} 签收" if task.claimed_by_id else "尚未签收"
        raise ConflictError(f"任务「{task.title}」{holder}；请先签收再办理。")
    if instance.status != "running":
        raise ConflictError(f"流程 {instance.id} 当前为「{instance.status_label}」，不能继续办理，请联系管理员。")
    try:
        workflow = load_workflow(instance.state, RunContext(instance, user))
    except ProcessRunError as error:
        # A state that cannot be loaded will not load on a retry either.
        db.session.rollback()
        _record_failure(task.instance_id, user, task.title, error, status="error")
        raise
    try:
        spiff_task = workflow.get_task_from_id(UUID(task.spiff_task_id))
        if not spiff_task.has_state(TaskState.READY):
            raise ConflictError(f"任务「{task.title}」在流程中已不是待办状态，请刷新待办列表。")
        data = _task_data(spiff_task, task.form, clean)
        spiff_task.data.update(data)
        spiff_task.data[f"{task.task_spec_name}_by"] = user.name
        spiff_task.run()
        task.status = "completed"
        task.completed_by_id = user.id
        task.completed_at = utcnow()
        task.decision = decision
        task.comment = comment
        record_event(instance, "completed", user=user, task_name=task.title, decision=decision, comment=comment, data=_public(data))
        run_engine(workflow)
        _sync_and_save(instance, workflow, user)
    except (ProcessRunError, SpiffWorkflowException) as error:
        db.session.rollback()
        _record_failure(task.instance_id, user, task.title, error)
        if isinstance(error, ProcessRunError):
            raise
        raise ProcessRunError(f"The workflow engine failed: {error}") from error
    db.session.commit()
    return instance


def _public(data):
    """Keep the JSON-native values of task data for an audit event."""
    return {key: value for key, value in data.items() if isinstance(value, (str, int, bool, type(None)))}


def _record_failure(instance_id, user, task_name, error, status=None):
    """Append an `error` event in a fresh transaction after a rollback, and set `status` when given."""
    logger.error("Process instance %s failed at %s: %s", instance_id, task_name, error)
    instance = lock_row(ProcessInstance, instance_id)
    if status is not None:
        instance.status = status
    record_event(instance, "error", user=user, task_name=task_name, comment=str(error)[:1000])
    db.session.commit()


def _sync_and_save(instance, workflow, user):
    """Create inbox rows for newly READY user tasks, cancel vanished ones, set the status and store the state."""
    ready = {str(t.id): t for t in workflow.get_tasks(state=TaskState.READY, manual=True)}
    open_tasks = db.session.scalars(
        sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open")
    ).all()
    known = {t.spiff_task_id for t in open_tasks}
    for stale in open_tasks:
        if stale.spiff_task_id not in ready:
            stale.status = "cancelled"
    for spiff_id, spiff_task in ready.items():
        if spiff_id in known:
            continue
        spec = spiff_task.task_spec
        properties = (getattr(spec, "extensions", None) or {}).get("properties") or {}
        task = HumanTask(
            company_id=instance.company_id, instance_id=instance.id, spiff_task_id=spiff_id,
            task_spec_name=spec.name, title=spec.bpmn_name or spec.name, lane_role=spec.lane or "clerk",
            form=properties.get("form", "approval"), status="open",
        )
        db.session.add(task)
        record_event(instance, "task_ready", task_name=task.title, data={"lane": task.lane_role})
    if workflow.is_completed():
        ends = [t.task_spec.name for t in workflow.get_tasks(state=TaskState.COMPLETED) if t.task_spec.name.startswith(REJECTED_END_PREFIX)]
        instance.status = "rejected" if ends else "completed"
        record_event(instance, "finished", task_name=instance.status_label, data={"status": instance.status})
    instance.state = dump_workflow(workflow)
    db.session.flush()


# Task data shown to approvers, in display order.
SUMMARY_KEYS = ("reason", "comment", "escalation_reason", "company_decision", "company_comment", "company_approval_by")


def task_summary(task):
    """Collect what an approver needs beside the form: the account, the season receivable now and after 报停, and the request data."""
    instance = task.instance
    account = db.session.scalar(sa.select(Account).where(Account.id == instance.account_id))
    summary = {"instance": instance, "account": account, "season": None, "receivable": None, "suspended": None, "data": {}}
    season = current_season(account.company_id)
    if season is not None:
        summary["season"] = season
        summary["receivable"] = season_receivable(account.id, season.id)
        try:
            has_lift, kind = account_charge_inputs(account)
            charge = compute_charge(tariff_in_force(season), account, has_lift, kind, billing_status="suspended")
            summary["suspended"] = charge.amount if charge else None
        except TariffError as error:
            logger.warning("No suspended charge for account %s: %s", account.id, error)
    if task.status == "open":
        try:
            workflow = load_workflow(instance.state, RunContext(instance))
            data = workflow.get_task_from_id(UUID(task.spiff_task_id)).data
            summary["data"] = {key: data[key] for key in SUMMARY_KEYS if key in data}
        except (ProcessRunError, SpiffWorkflowException) as error:
            logger.warning("Task %s data could not be read: %s", task.id, error)
    return summary

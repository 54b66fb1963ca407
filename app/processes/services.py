"""Starting, claiming and completing process tasks, each under a row lock per instance.

Every change runs as load → run → save in one database transaction together with its
business effect (ledger line, account status, inbox rows, audit events). When the engine
fails, the whole transaction is rolled back and an `error` event is appended afterwards,
so nothing is half-stored and the task can be retried once the cause is fixed.
"""

import logging
from datetime import date
from decimal import Decimal
from uuid import UUID

import sqlalchemy as sa
from flask_babel import force_locale
from flask_babel import gettext as _
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.util.task import TaskState

from app.extensions import db
from app.i18n import DEFAULT_LOCALE, N_, Message, message_of, translate_label
from app.locking import lock_row
from app.messaging.events import emit
from app.billing.services import season_receivable
from app.money import ZERO, format_money
from app.network.models import Account
from app.org.services import require_permission
from app.payments.services import amount_owed
from app.processes.access import ConflictError, InputError, NotFoundError, locked_task, running_instance
from app.processes.audit import add_pending_events, record_event
from app.processes.decisions import decisions_for
from app.processes.definitions import definition_for, preview, status_error
from app.processes.dmn import referenced_decisions
from app.processes.deployment import latest_model, spec_for
from app.processes.engine import ProcessRunError, RunContext, dump_workflow, load_workflow, new_workflow, run_engine
from app.processes.fields import clean_task_values, clean_values, send_back_option, task_data
from app.processes.messages import engine_failure
from app.processes.models import DECISIONS, PROCESS_TYPES, START_SUFFIX, HumanTask, ProcessInstance, utcnow
from app.processes.registry import current_season
from app.processes.specs import store_spec
from app.processes.step_names import shown_step_name
from app.processes.timers import armed_timers, cancel_waiting_timers, sync_timers, task_due_at

logger = logging.getLogger(__name__)

# End events whose id starts with these prefixes finish an instance as rejected or cancelled.
REJECTED_END_PREFIX = "end_rejected"
CANCELLED_END_PREFIX = "end_cancelled"
# Process types that change the billing status; an account runs at most one of them at a time.
STATUS_CHANGING_TYPES = ("suspension", "forced_shutoff", "reheating", "connection")


def start_suspension(account_id, user, reason, comment=""):
    """File a 报停 request for an account; returns the new running instance."""
    return start_process("suspension", account_id, user, {"reason": reason, "comment": comment})


def start_process(process_type, account_id, user, values, permission="process.start"):
    """File a request of any process type for an account from its start form values; returns the running instance.

    `permission` is what the user must hold: filing at the counter needs process.start, a
    back-charge that a field inspection starts needs fieldwork.do.

    Raises NotFoundError (account outside the user's companies), AccessError, InputError
    (a form value), ConflictError (the account's state or a running request) and
    ProcessRunError (the engine). Nothing is stored unless the instance starts.
    """
    definition = definition_for(process_type)
    account = db.session.scalar(sa.select(Account).where(Account.id == account_id))
    if account is None:
        raise NotFoundError(_("用户 %(id)s 不存在，或不属于您所在的公司。", id=account_id))
    require_permission(user, permission, account.company_id)
    clean = clean_values(definition.start_fields, values)
    model = latest_model(account.company_id, process_type)
    if model is None:
        raise ConflictError(_("本公司尚未部署%(process)s流程，请联系管理员部署后再受理。", process=translate_label(definition.label)))

    account = lock_row(Account, account.id)
    problem = status_error(definition, account)
    if problem:
        raise ConflictError(problem)
    _check_running(account, process_type)
    start_data, event_data = definition.prepare(account, current_season(account.company_id), clean)
    comment = clean.get("comment", "")

    decisions = decisions_for(account.company_id, referenced_decisions(model.bpmn_xml))
    decision_versions = {decision.decision_id: decision.version for decision in decisions}
    instance = ProcessInstance(
        company_id=account.company_id, model_id=model.id, process_type=process_type, account_id=account.id,
        status="running", state="", started_by_id=user.id, decision_versions=decision_versions,
    )
    db.session.add(instance)
    db.session.flush()
    record_event(
        instance, "started", user=user, task_name=f"{definition.label}{START_SUFFIX}", comment=comment,
        data={**event_data, "model_version": model.version, "decision_versions": decision_versions},
    )
    # user_type and building_area are the account facts every escalation table may read.
    start_data = {
        **start_data, "account_id": account.id, "account_no": account.account_no, "comment": comment, "started_by": user.name,
        "user_type": account.user_type, "building_area": account.building_area,
    }
    spec, subprocess_specs = spec_for(model, decisions)
    try:
        workflow = new_workflow(spec, subprocess_specs, RunContext(instance, user), start_data)
        run_engine(workflow)
        # A new instance has no inbox rows yet.
        _sync_and_save(instance, workflow, user, open_tasks=[])
    except ProcessRunError:
        db.session.rollback()
        logger.exception("Starting %s for account %s failed; nothing was stored", process_type, account_id)
        raise
    db.session.commit()
    logger.info("User %s started %s instance %s for account %s", user.id, process_type, instance.id, account.id)
    return instance


def _check_running(account, process_type):
    """Raise ConflictError when the account already runs this process, or another one that changes its status."""
    label = translate_label(PROCESS_TYPES[process_type])
    running = running_instance(account.id, process_type)
    if running is not None:
        raise ConflictError(_("该户已有办理中的%(process)s申请（流程 %(id)s），请勿重复申请。", process=label, id=running.id))
    if process_type not in STATUS_CHANGING_TYPES:
        return
    for other in STATUS_CHANGING_TYPES:
        running = running_instance(account.id, other) if other != process_type else None
        if running is not None:
            raise ConflictError(_(
                "该户有办理中的%(other)s申请（流程 %(id)s），办结后才能申请%(process)s。",
                other=translate_label(PROCESS_TYPES[other]), id=running.id, process=label,
            ))


def _closed_state(task):
    return _("已被取消") if task.status == "cancelled" else _("已办结")


def _check_not_suspended(instance, task):
    """Raise ConflictError when an administrator has suspended the task's instance."""
    if instance.status == "suspended":
        raise ConflictError(
            _("流程 %(id)s 已被管理员挂起，任务「%(task)s」暂不能签收或办理；请等待管理员恢复流程后再试。", id=instance.id, task=shown_step_name(task.title))
        )


def claim_task(task_id, user):
    """Claim an open task so that only this user can complete it."""
    task, instance, _open_tasks = locked_task(task_id, user)
    if task.status != "open":
        raise ConflictError(_("任务「%(task)s」%(state)s，无需签收。", task=shown_step_name(task.title), state=_closed_state(task)))
    _check_not_suspended(instance, task)
    if task.claimed_by_id == user.id:
        return task
    if task.claimed_by_id is not None:
        raise ConflictError(_("任务「%(task)s」已由 %(name)s 签收，请等待其办理或退回。", task=shown_step_name(task.title), name=task.claimed_by_name))
    if instance.status == "running":
        _cancel_if_settled(instance, user, task.title)
    task.claimed_by_id = user.id
    task.claimed_by_name = user.name
    record_event(instance, "claimed", user=user, task_name=task.title)
    db.session.commit()
    return task


def release_task(task_id, user):
    """Return a claimed task to the open pool of its lane."""
    task, instance, _open_tasks = locked_task(task_id, user)
    if task.status != "open" or task.claimed_by_id != user.id:
        raise ConflictError(_("任务「%(task)s」不在您名下，无法退回。", task=shown_step_name(task.title)))
    task.claimed_by_id = None
    task.claimed_by_name = ""
    record_event(instance, "released", user=user, task_name=task.title)
    db.session.commit()
    return task


def _task_properties(spiff_task):
    return (getattr(spiff_task.task_spec, "extensions", None) or {}).get("properties") or {}


def complete_task(task_id, user, values):
    """Complete a claimed task with the submitted form values and run the workflow to its next wait."""
    task, instance, open_tasks = locked_task(task_id, user)
    try:
        clean_task_values(task.form, values, allow_send_back=True)
    except InputError:
        db.session.rollback()
        raise
    if task.status != "open":
        raise ConflictError(_("任务「%(task)s」%(state)s，不能重复提交。", task=shown_step_name(task.title), state=_closed_state(task)))
    if task.claimed_by_id != user.id:
        if task.claimed_by_id:
            raise ConflictError(_("任务「%(task)s」已由 %(name)s 签收；请先签收再办理。", task=shown_step_name(task.title), name=task.claimed_by_name))
        raise ConflictError(_("任务「%(task)s」尚未签收；请先签收再办理。", task=shown_step_name(task.title)))
    _check_not_suspended(instance, task)
    if instance.status != "running":
        raise ConflictError(_("流程 %(id)s 当前为「%(status)s」，不能继续办理，请联系管理员。", id=instance.id, status=translate_label(instance.status_label)))
    _cancel_if_settled(instance, user, task.title)
    try:
        workflow = load_workflow(instance.state, RunContext(instance, user, task))
    except ProcessRunError as error:
        # A state that cannot be loaded will not load on a retry either.
        db.session.rollback()
        _record_failure(task.instance_id, user, task.title, error, status="error")
        raise
    try:
        spiff_task = workflow.get_task_from_id(UUID(task.spiff_task_id))
        if not spiff_task.has_state(TaskState.READY):
            raise ConflictError(_("任务「%(task)s」在流程中已不是待办状态，请刷新待办列表。", task=shown_step_name(task.title)))
        properties = _task_properties(spiff_task)
        clean = clean_task_values(task.form, values, allow_send_back=send_back_option(properties))
        decision, comment = clean.get("decision"), clean["comment"]
        data = task_data(task.form, clean, properties.get("data_prefix") or spiff_task.task_spec.name)
        spiff_task.data.update(data)
        spiff_task.data[f"{task.task_spec_name}_by"] = user.name
        spiff_task.run()
        completed_at = utcnow()
        record_event(instance, "completed", user=user, task_name=task.title, decision=decision, comment=comment, data=_public(data))
        run_engine(workflow)

        def mark_completed():
            task.status = "completed"
            task.completed_by_id = user.id
            task.completed_at = completed_at
            task.decision = decision
            task.comment = comment

        # Set after the save's reads, so that the task's UPDATE goes out in the save's one
        # flush instead of an autoflush before a service task's or the save's first query.
        _sync_and_save(instance, workflow, user, open_tasks, before_writes=mark_completed)
    except InputError:
        db.session.rollback()
        raise
    except (ProcessRunError, SpiffWorkflowException) as error:
        db.session.rollback()
        _record_failure(task.instance_id, user, task.title, error)
        if isinstance(error, ProcessRunError):
            raise
        raise ProcessRunError(engine_failure(error)) from error
    db.session.commit()
    return instance


def _public(data):
    """Task data as audit-event JSON: amounts and dates become text, other non-JSON values are left out."""
    public = {}
    for key, value in data.items():
        if isinstance(value, (Decimal, date)):
            public[key] = str(value)
        elif isinstance(value, (str, int, bool, type(None))):
            public[key] = value
    return public


def _settled_reason(instance):
    """Return why a running instance must be cancelled before its next step, or None.

    A forced shutoff is only for arrears: once the account owes nothing, the request
    is void, whichever step it is at.
    """
    if instance.process_type != "forced_shutoff":
        return None
    account = db.session.get(Account, instance.account_id)
    if amount_owed(account).total > ZERO:
        return None
    return N_("该户欠费已结清，强停流程已自动取消，无需继续办理。")


def _cancel_if_settled(instance, user, task_name):
    """Cancel an instance whose request became void, commit, and raise ConflictError; the caller holds the row lock."""
    reason = _settled_reason(instance)
    if reason is None:
        return
    instance.status = "cancelled"
    open_tasks = db.session.scalars(
        sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open")
    ).all()
    for open_task in open_tasks:
        open_task.status = "cancelled"
    cancel_waiting_timers(instance.id)
    record_event(instance, "cancelled", user=None, task_name=task_name, comment=reason, data={"message": Message(reason).as_data()})
    emit_process_finished(instance)
    db.session.commit()
    logger.info("Process instance %s was cancelled before %s: %s", instance.id, task_name, reason)
    # The audit event keeps the Chinese reason; the user reads it in their language.
    raise ConflictError(translate_label(reason))


def _record_failure(instance_id, user, task_name, error, status=None):
    """Append an `error` event in a fresh transaction after a rollback, and set `status` when given."""
    logger.error("Process instance %s failed at %s: %s", instance_id, task_name, error)
    instance = lock_row(ProcessInstance, instance_id)
    if status is not None:
        instance.status = status
    data = {}
    message = message_of(error)
    if message is not None:
        data["message"] = message.as_data()
    failure = getattr(error, "failure", None)
    if failure:
        data["run_failure"] = failure
    # The comment keeps the Chinese text for the hash chain and exports; pages translate from `data`.
    with force_locale(DEFAULT_LOCALE):
        comment = str(error)[:1000]
    record_event(instance, "error", user=user, task_name=task_name, comment=comment, data=data or None)
    db.session.commit()


def fire_timer_in_instance(instance, timer):
    """Fire a stored timer in its locked, running instance, run the workflow on and commit; returns True when it fired.

    The stored row decides when a timer is due, so the engine's timer task is marked as
    fired before the refresh instead of comparing its own clock.
    """
    if _settled_reason(instance) is not None:
        try:
            _cancel_if_settled(instance, None, "定时事件")
        except ConflictError:
            return False
    try:
        workflow = load_workflow(instance.state, RunContext(instance))
        spiff_task = workflow.get_task_from_id(UUID(timer.spiff_task_id))
        if spiff_task is None or not spiff_task.has_state(TaskState.WAITING):
            timer.status = "cancelled"
            db.session.commit()
            logger.warning("Timer %s of instance %s was no longer waiting; marked cancelled", timer.id, instance.id)
            return False
        spiff_task._set_internal_data(event_fired=True)
        workflow.refresh_timers()
        run_engine(workflow)
        _sync_and_save(instance, workflow, None)
    except (ProcessRunError, SpiffWorkflowException) as error:
        db.session.rollback()
        _record_failure(instance.id, None, f"定时事件 {timer.element_id}", error, status="error")
        return False
    db.session.commit()
    logger.info("Timer %s (%s) of instance %s fired", timer.id, timer.element_id, instance.id)
    return True


def _sync_and_save(instance, workflow, user, open_tasks=None, before_writes=None):
    """Store armed timers, create inbox rows for newly READY user tasks, cancel vanished ones, set the status and store the state.

    `open_tasks` are the instance's open tasks as read under its row lock in this
    transaction, and tasks closed since are skipped. When it is None they are read here.
    `before_writes` is called once the reads are done, so the rows it changes are written
    in the save's flush instead of an autoflush before one of the reads.
    """
    ready = {str(t.id): t for t in workflow.get_tasks(state=TaskState.READY, manual=True)}
    if open_tasks is None:
        open_tasks = db.session.scalars(
            sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open")
        ).all()
    known = {t.spiff_task_id for t in open_tasks if t.status == "open"}
    # One walk of the task tree finds the armed timers for both uses below.
    armed = armed_timers(workflow)
    # Due times first: they read the timer settings, which would flush the timer rows that
    # sync_timers changes.
    due_times = {
        spiff_id: task_due_at(instance, workflow, spiff_task, armed)
        for spiff_id, spiff_task in ready.items() if spiff_id not in known
    }
    sync_timers(instance, workflow, record_event, armed)
    if before_writes is not None:
        before_writes()
    # Tasks closed since they were read, such as the one just completed, stay as they are.
    open_tasks = [task for task in open_tasks if task.status == "open"]
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
            process_type=instance.process_type, account_id=instance.account_id,
            due_at=due_times[spiff_id],
        )
        db.session.add(task)
        record_event(instance, "task_ready", task_name=task.title, data={"lane": task.lane_role})
    if workflow.is_completed():
        ends = [t.task_spec.name for t in workflow.get_tasks(state=TaskState.COMPLETED)]
        if any(name.startswith(REJECTED_END_PREFIX) for name in ends):
            instance.status = "rejected"
        elif any(name.startswith(CANCELLED_END_PREFIX) for name in ends):
            instance.status = "cancelled"
        else:
            instance.status = "completed"
        record_event(instance, "finished", task_name=instance.status_label, data={"status": instance.status})
        emit_process_finished(instance)
    store_spec(instance.company_id, workflow)
    instance.state = dump_workflow(workflow)
    # One flush writes the state, the step's audit events and the chain head.
    add_pending_events(db.session)
    db.session.flush()


def emit_process_finished(instance):
    """Record the `process.finished` event of an instance that reached its end (see docs/integrations.md)."""
    account = db.session.get(Account, instance.account_id)
    emit(instance.company_id, "process.finished", str(instance.id), {
        "instance_id": instance.id, "process_type": instance.process_type, "status": instance.status,
        "account_id": instance.account_id, "account_no": account.account_no if account else None,
    })


# Task data keys whose values are texts the code wrote (marked with N_), not typed by users.
TRANSLATED_KEYS = {"escalation_reason", "waiver_mode"}


def task_summary(task):
    """Collect what an approver needs beside the form: the account, the season receivable now and after approval, and the request data."""
    instance = task.instance
    definition = definition_for(instance.process_type)
    account = db.session.scalar(sa.select(Account).where(Account.id == instance.account_id))
    summary = {"instance": instance, "account": account, "season": None, "receivable": None, "preview": None, "rows": [],
               "owed": None, "allow_send_back": False}
    data = {}
    if task.status == "open":
        try:
            workflow = load_workflow(instance.state, RunContext(instance))
            spiff_task = workflow.get_task_from_id(UUID(task.spiff_task_id))
            data = spiff_task.data
            summary["allow_send_back"] = send_back_option(_task_properties(spiff_task))
        except (ProcessRunError, SpiffWorkflowException) as error:
            logger.warning("Task %s data could not be read: %s", task.id, error)
    choice_keys = {spec.name for spec in definition.start_fields if spec.choices}
    summary["rows"] = [
        (label, _display(key, data[key], choice_keys)) for key, label in definition.summary_keys if key in data and data[key] not in (None, "")
    ]
    if instance.process_type == "forced_shutoff":
        summary["owed"] = amount_owed(account).total
    season = current_season(account.company_id)
    if season is not None:
        summary["season"] = season
        summary["receivable"] = season_receivable(account.id, season.id)
        summary["preview"] = preview(definition, account, season, data)
    return summary


def _display(key, value, choice_keys):
    """Format a task data value for the approver; labels the code chose are translated, typed text is shown as stored."""
    # Approval tasks store the decision's value (approve, reject, send_back) as `<prefix>_decision`.
    if key.endswith("_decision") and value in DECISIONS:
        return translate_label(DECISIONS[value])
    if isinstance(value, str) and (key in TRANSLATED_KEYS or key in choice_keys or key.endswith("_label")):
        return translate_label(value)
    if isinstance(value, Decimal):
        return format_money(value) if value == value.quantize(Decimal("0.01")) else f"{value.normalize():f}"
    return value

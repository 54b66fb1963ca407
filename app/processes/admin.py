"""Administrator actions on process instances: suspend, resume, terminate and retry.

Each action needs the permission process.admin in the instance's company and a reason.
It runs under the instance row lock and appends an audit event with the user and the
reason, in the same transaction as the status change.
"""

import logging

import sqlalchemy as sa
from flask_babel import gettext as _
from SpiffWorkflow.exceptions import SpiffWorkflowException

from app.extensions import db
from app.i18n import N_, join_items, translate_label
from app.locking import lock_row
from app.network.models import Account
from app.org.services import require_permission
from app.processes.access import ConflictError, InputError, get_instance
from app.processes.audit import record_event
from app.processes.engine import ProcessRunError, RunContext, load_workflow, run_engine
from app.processes.messages import engine_failure
from app.processes.models import INSTANCE_STATUSES, HumanTask, ProcessInstance
from app.processes.services import _check_running, _record_failure, _sync_and_save, emit_process_finished
from app.processes.timers import cancel_waiting_timers
from app.texts import clean_text

logger = logging.getLogger(__name__)

MAX_REASON_CHARS = 500

# action -> (Chinese label marked with N_, statuses the action starts from)
ACTIONS = {
    "suspend": (N_("挂起流程"), ("running",)),
    "resume": (N_("恢复流程"), ("suspended",)),
    "terminate": (N_("终止流程"), ("running", "suspended", "error")),
    "retry": (N_("重试流程"), ("error",)),
}


def clean_reason(reason, action):
    """Return the stripped reason of an admin action, or raise InputError when it is missing or too long."""
    label = translate_label(ACTIONS[action][0])
    text = clean_text(reason)
    if not text:
        raise InputError(_("请填写%(action)s的原因。", action=label))
    if len(text) > MAX_REASON_CHARS:
        raise InputError(_("%(action)s的原因共 %(count)s 字，超过 %(max)s 字上限，请精简后重试。", action=label, count=len(text), max=MAX_REASON_CHARS))
    return text


def _lock_for(action, instance_id, user, reason):
    """Check the permission, the reason and the status, and return the locked instance with the clean reason.

    Raises NotFoundError (outside the user's companies), AccessError, InputError and
    ConflictError (the instance's status does not allow the action).
    """
    label, allowed = ACTIONS[action]
    instance = get_instance(instance_id)
    require_permission(user, "process.admin", instance.company_id)
    text = clean_reason(reason, action)
    instance = lock_row(ProcessInstance, instance.id)
    if instance.status not in allowed:
        allowed_labels = join_items(_("「%(status)s」", status=translate_label(INSTANCE_STATUSES[status])) for status in allowed)
        raise ConflictError(_(
            "流程 %(id)s 当前为「%(status)s」，不能%(action)s；只有%(allowed)s的流程可以%(action)s。",
            id=instance.id, status=translate_label(instance.status_label), action=translate_label(label), allowed=allowed_labels,
        ))
    return instance, text


def _finish(action, instance, user, reason, data):
    label = ACTIONS[action][0]
    event_type = {"suspend": "suspended", "resume": "resumed", "terminate": "terminated", "retry": "retried"}[action]
    record_event(instance, event_type, user=user, task_name=label, comment=reason, data=data)


def suspend_instance(instance_id, user, reason):
    """Suspend a running instance, so that its tasks cannot be claimed or completed until it is resumed."""
    instance, text = _lock_for("suspend", instance_id, user, reason)
    instance.status = "suspended"
    _finish("suspend", instance, user, text, {"status_before": "running"})
    db.session.commit()
    logger.info("User %s suspended process instance %s", user.id, instance.id)
    return instance


def resume_instance(instance_id, user, reason):
    """Resume a suspended instance so that its open tasks can be claimed and completed again."""
    instance, text = _lock_for("resume", instance_id, user, reason)
    instance.status = "running"
    _finish("resume", instance, user, text, {"status_before": "suspended"})
    db.session.commit()
    logger.info("User %s resumed process instance %s", user.id, instance.id)
    return instance


def terminate_instance(instance_id, user, reason):
    """End a running, suspended or failed instance for good and cancel its open tasks.

    Business effects of steps already completed (a re-rated charge, a changed billing
    status) stay as they are. Correct them with a new request of the matching type.
    """
    instance, text = _lock_for("terminate", instance_id, user, reason)
    status_before = instance.status
    open_tasks = db.session.scalars(
        sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.status == "open")
    ).all()
    for task in open_tasks:
        task.status = "cancelled"
    cancel_waiting_timers(instance.id)
    instance.status = "terminated"
    _finish("terminate", instance, user, text, {"status_before": status_before, "cancelled_tasks": len(open_tasks)})
    emit_process_finished(instance)
    db.session.commit()
    logger.info("User %s terminated process instance %s (%s open tasks cancelled)", user.id, instance.id, len(open_tasks))
    return instance


def retry_instance(instance_id, user, reason):
    """Reload a failed instance's stored state, run its automatic steps and set it running again.

    On a new engine failure the transaction is rolled back, an `error` event is appended,
    the instance stays in status `error` and ProcessRunError is raised.
    """
    instance, text = _lock_for("retry", instance_id, user, reason)
    account = db.session.get(Account, instance.account_id)
    try:
        _check_running(account, instance.process_type)
    except ConflictError as error:
        raise ConflictError(_("流程 %(id)s 不能重试：%(error)s", id=instance.id, error=error)) from None
    try:
        workflow = load_workflow(instance.state, RunContext(instance, user))
        run_engine(workflow)
        instance.status = "running"
        _finish("retry", instance, user, text, {"status_before": "error"})
        _sync_and_save(instance, workflow, user)
    except (ProcessRunError, SpiffWorkflowException) as error:
        db.session.rollback()
        _record_failure(instance_id, user, ACTIONS["retry"][0], error, status="error")
        if isinstance(error, ProcessRunError):
            raise
        raise ProcessRunError(engine_failure(error)) from error
    db.session.commit()
    logger.info("User %s retried process instance %s; its status is now %s", user.id, instance.id, instance.status)
    return instance


ACTION_FUNCTIONS = {
    "suspend": suspend_instance,
    "resume": resume_instance,
    "terminate": terminate_instance,
    "retry": retry_instance,
}

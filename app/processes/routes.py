"""Process inbox, task pages, 报停 requests and instance history."""

import logging

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from app.extensions import db
from app.forms.processes import ApprovalForm, SuspensionStartForm, ValveCloseForm
from app.org.services import AccessError, has_permission
from app.processes.access import (
    ConflictError, InputError, NotFoundError, account_history, get_instance, get_task, inbox_tasks,
    instance_events, running_instance, user_lanes,
)
from app.processes.audit import verify_chain
from app.processes.engine import ProcessRunError
from app.processes.services import claim_task, complete_task, release_task, start_suspension, task_summary

logger = logging.getLogger(__name__)

bp = Blueprint("processes", __name__, url_prefix="/processes")

TASK_FORMS = {"approval": ApprovalForm, "valve_close": ValveCloseForm}


def _fail(error):
    """Roll back and turn a process error into an HTTP error page (404, 403 or 409)."""
    db.session.rollback()
    if isinstance(error, NotFoundError):
        abort(404, str(error))
    if isinstance(error, AccessError):
        abort(403, str(error))
    abort(409, str(error))


@bp.app_context_processor
def _process_helpers():
    return {"suspension_panel": suspension_panel, "process_history": account_history}


def suspension_panel(account):
    """Return the values the account page's 报停 box needs."""
    can_start = current_user.is_authenticated and has_permission(current_user, "process.start", account.company_id)
    return {
        "can_start": can_start,
        "running": running_instance(account.id, "suspension"),
        "form": SuspensionStartForm() if can_start else None,
    }


@bp.route("/inbox")
@login_required
def inbox():
    """List open tasks in the lanes the user may act in."""
    return render_template("processes/inbox.html", rows=inbox_tasks(current_user))


@bp.route("/suspension/start/<int:account_id>", methods=["POST"])
@login_required
def start(account_id):
    """File a 报停 request for an account from its page."""
    form = SuspensionStartForm()
    if not form.validate_on_submit():
        for messages in form.errors.values():
            for message in messages:
                flash(message, "error")
        return redirect(url_for("network.account", account_id=account_id))
    try:
        instance = start_suspension(account_id, current_user, form.reason.data, form.comment.data)
    except (NotFoundError, AccessError) as error:
        _fail(error)
    except (InputError, ConflictError, ProcessRunError) as error:
        db.session.rollback()
        flash(f"报停申请未受理：{error}", "error")
        return redirect(url_for("network.account", account_id=account_id))
    flash(f"报停申请已受理（流程 {instance.id}），已转分公司审批。", "success")
    return redirect(url_for("network.account", account_id=account_id))


@bp.route("/tasks/<int:task_id>", methods=["GET", "POST"])
@login_required
def task(task_id):
    """Show a task with its account summary and, when claimed by the user, its form."""
    try:
        human_task = get_task(task_id, current_user)
    except (NotFoundError, AccessError) as error:
        _fail(error)
    form = TASK_FORMS[human_task.form]()
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                complete_task(task_id, current_user, form.data)
            except (NotFoundError, AccessError) as error:
                _fail(error)
            except (InputError, ConflictError, ProcessRunError) as error:
                db.session.rollback()
                flash(f"提交未成功：{error}", "error")
                status = 400 if isinstance(error, InputError) else 409
                return _render_task(task_id, form, status)
            flash(f"任务「{human_task.title}」已办结。", "success")
            return redirect(url_for("processes.inbox"))
        for messages in form.errors.values():
            for message in messages:
                flash(message, "error")
        return _render_task(task_id, form, 400)
    return _render_task(task_id, form, 200)


def _render_task(task_id, form, status):
    human_task = get_task(task_id, current_user)
    summary = task_summary(human_task)
    events = instance_events(human_task.instance_id)
    return render_template("processes/task.html", task=human_task, form=form, summary=summary, events=events), status


@bp.route("/tasks/<int:task_id>/claim", methods=["POST"])
@login_required
def claim(task_id):
    """Claim a task so that only the current user can complete it."""
    try:
        claim_task(task_id, current_user)
    except (NotFoundError, AccessError) as error:
        _fail(error)
    except ConflictError as error:
        db.session.rollback()
        flash(str(error), "error")
        return redirect(url_for("processes.inbox")), 303
    return redirect(url_for("processes.task", task_id=task_id)), 303


@bp.route("/tasks/<int:task_id>/release", methods=["POST"])
@login_required
def release(task_id):
    """Return a claimed task to its lane's open pool."""
    try:
        release_task(task_id, current_user)
    except (NotFoundError, AccessError) as error:
        _fail(error)
    except ConflictError as error:
        db.session.rollback()
        flash(str(error), "error")
    return redirect(url_for("processes.inbox")), 303


@bp.route("/instances/<int:instance_id>")
@login_required
def instance(instance_id):
    """Show one instance with its status and its verified audit history."""
    if not has_permission(current_user, "account.read"):
        abort(403, "您没有查看用户档案与业务记录的权限。")
    try:
        process_instance = get_instance(instance_id)
    except NotFoundError as error:
        _fail(error)
    return render_template(
        "processes/instance.html",
        instance=process_instance,
        events=instance_events(instance_id),
        chain=verify_chain(instance_id),
        lanes=user_lanes(current_user, process_instance.company_id),
    )

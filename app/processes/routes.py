"""Process inbox, task pages, requests of every process type, instance history, the escalation settings page and the decision table endpoints."""

import logging

import sqlalchemy as sa
from flask import Blueprint, Response, abort, flash, g, jsonify, redirect, render_template, request, url_for
from flask_babel import format_date, get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required

from app.extensions import db
from app.i18n import join_items, translate_label
from app.forms.processes import fill_choices, start_form_class, task_form_class
from app.org.services import AccessError, has_permission
from app.processes.access import (
    ConflictError, InputError, NotFoundError, account_history, get_instance, get_task,
    instance_events, running_instance, user_lanes,
)
from app.processes.admin import ACTION_FUNCTIONS, ACTIONS, MAX_REASON_CHARS
from app.processes.audit import verify_chain
from app.processes.decisions import ensure_decision, ensure_decisions, save_decision
from app.processes.definitions import DEFINITIONS
from app.processes.dmn import DECISION_IDS, DecisionError, read_table, variables_for
from app.processes.deployment import latest_model
from app.processes.escalation import WAIVER_CATEGORIES
from app.processes.messages import run_error_text, run_failure_text
from app.processes.engine import ProcessRunError
from app.processes.services import claim_task, complete_task, release_task, start_process, task_summary
from app.processes.step_names import shown_step_name
from app.processes.inbox import SORTS, InboxFilters, delegate_candidates, delegate_task, inbox_page, is_overdue, parse_filters
from app.processes.migration import migrate_instances, model_versions, parse_mapping
from app.processes.models import CALENDAR_KINDS, PROCESS_TYPES, TASK_STATUSES
from app.processes.calendar import (
    MAX_YEAR, MIN_YEAR, CalendarError, calendar_days, delete_day, published_days, save_day, seed_calendar, today_local,
    year_summary,
)
from app.processes.calendar_import import CalendarImportError, import_calendar, target_companies
from app.processes.options import option_rows
from app.processes.settings import RuleError, rule_rows, save_process_options, save_rule, save_timer_settings, timer_rows
from app.processes.timers import UNITS as TIMER_UNITS
from app.org.models import Company
from app.tenancy import SYSTEM_SCOPE, scoped

logger = logging.getLogger(__name__)

bp = Blueprint("processes", __name__, url_prefix="/processes")


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
    return {"process_panels": process_panels, "process_history": account_history, "run_failure_text": run_failure_text}


def error_text(error):
    """Return an error for a flash message: a run failure in the reader's language, anything else as it is."""
    return run_error_text(error)


def process_panels(account):
    """Return one request box per process type for the account page: its form, or the running instance.

    A form that failed on submit (`g.rejected_start_form`, set by the start view) comes back
    with the values the user entered, and its box is open.
    """
    rejected_code, rejected_form = g.get("rejected_start_form", (None, None))
    can_start = current_user.is_authenticated and has_permission(current_user, "process.start", account.company_id)
    panels = []
    for code, definition in DEFINITIONS.items():
        running = running_instance(account.id, code)
        startable = can_start and account.billing_status in definition.start_statuses
        if running is None and not startable:
            continue
        if running is None and latest_model(account.company_id, code) is None:
            continue
        form = None
        if startable and running is None:
            form = rejected_form if code == rejected_code else start_form_class(code)()
            if definition.form_choices is not None:
                fill_choices(form, definition.form_choices(account))
        panels.append({"code": code, "label": definition.label, "running": running, "form": form,
                       "rejected": code == rejected_code})
    return panels


@bp.route("/inbox")
@login_required
def inbox():
    """List the tasks in the lanes the user may act in, filtered, sorted and paged by the query string."""
    status = 200
    try:
        filters = parse_filters(request.args)
    except InputError as error:
        flash(str(error), "error")
        filters, status = InboxFilters(), 400
    rows, next_cursor = inbox_page(current_user, filters)
    companies = []
    if current_user.company.is_headquarters:
        with scoped(SYSTEM_SCOPE):
            companies = db.session.scalars(sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.code)).all()
    return render_template(
        "processes/inbox.html", rows=rows, filters=filters, next_cursor=next_cursor, sorts=SORTS,
        process_types=PROCESS_TYPES, task_statuses=TASK_STATUSES, companies=companies, is_overdue=is_overdue,
    ), status


@bp.route("/tasks/<int:task_id>/delegate", methods=["POST"])
@login_required
def delegate(task_id):
    """Hand a task to a colleague who may act in its lane."""
    try:
        task = delegate_task(task_id, current_user, request.form.get("user_id", ""), request.form.get("comment", ""))
    except (NotFoundError, AccessError) as error:
        _fail(error)
    except (InputError, ConflictError) as error:
        db.session.rollback()
        flash(_("转办未成功：%(error)s", error=error), "error")
        return redirect(url_for("processes.task", task_id=task_id)), 303
    flash(_("任务「%(task)s」已转办给 %(name)s。", task=shown_step_name(task.title), name=task.delegated_to_name), "success")
    return redirect(url_for("processes.inbox")), 303


@bp.route("/migrate", methods=["GET", "POST"])
@login_required
def migrate():
    """Move the company's running instances of a process from one model version to a newer one."""
    if current_user.company.is_headquarters or not has_permission(current_user, "process.admin"):
        abort(403, _("只有分公司管理员可以迁移本公司的流程版本。"))
    company_id = current_user.company_id
    results, status = None, 200
    if request.method == "POST":
        try:
            mapping = parse_mapping(request.form.get("mapping", ""))
            results = migrate_instances(
                company_id, request.form.get("process_type", ""), _version(request.form.get("from_version")),
                _version(request.form.get("to_version")), current_user, request.form.get("reason", ""), mapping,
            )
        except (InputError, ConflictError) as error:
            db.session.rollback()
            flash(_("迁移未执行：%(error)s", error=error), "error")
            status = 400
        else:
            moved = sum(result.migrated for result in results)
            flash(
                _("已迁移 %(moved)s 个流程，%(skipped)s 个未迁移（原因见下表）。", moved=moved, skipped=len(results) - moved),
                "success" if moved == len(results) else "error",
            )
    return render_template(
        "processes/migrate.html", versions=model_versions(company_id), results=results, process_types=PROCESS_TYPES,
    ), status


def _version(text):
    value = (text or "").strip()
    # ASCII digits only, because str.isdigit() also takes "²", which int() rejects, and at most
    # nine of them, so that the number fits an integer column.
    if not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise InputError(_("版本号「%(value)s」无效，请从列表中选择。", value=value[:10]))
    return int(value)


def _start_view(process_type):
    """Build the POST view that files a request of `process_type` for an account from its page."""

    def view(account_id):
        label = DEFINITIONS[process_type].label
        form = start_form_class(process_type)()
        if not form.validate_on_submit():
            for messages in form.errors.values():
                for message in messages:
                    flash(message, "error")
            return _account_page_with(process_type, form, account_id), 400
        try:
            instance = start_process(process_type, account_id, current_user, request.form)
        except (NotFoundError, AccessError) as error:
            _fail(error)
        except (InputError, ConflictError, ProcessRunError) as error:
            db.session.rollback()
            logger.info("Request %s for account %s rejected: %s", process_type, account_id, error)
            flash(_("%(process)s申请未受理：%(error)s", process=translate_label(label), error=error_text(error)), "error")
            return _account_page_with(process_type, form, account_id), 400 if isinstance(error, InputError) else 409
        flash(_("%(process)s申请已受理（流程 %(id)s），已转下一环节办理。", process=translate_label(label), id=instance.id), "success")
        return redirect(url_for("network.account", account_id=account_id))

    view.__name__ = f"start_{process_type}"
    view.__doc__ = f"File a {process_type} request for an account from its page."
    return view


def _account_page_with(process_type, form, account_id):
    """Render the account page with a rejected request form, so the entered values and the flashed error stay."""
    from app.network.routes import account as account_page

    g.rejected_start_form = (process_type, form)
    return account_page(account_id)


# One fixed URL per process type (/processes/<type>/start/<account id>), so that every
# route parameter names a row.
for _process_type in DEFINITIONS:
    bp.add_url_rule(
        f"/{_process_type}/start/<int:account_id>", endpoint=f"start_{_process_type}",
        view_func=login_required(_start_view(_process_type)), methods=["POST"],
    )


@bp.route("/tasks/<int:task_id>", methods=["GET", "POST"])
@login_required
def task(task_id):
    """Show a task with its account summary and, when claimed by the user, its form."""
    try:
        human_task = get_task(task_id, current_user)
    except (NotFoundError, AccessError) as error:
        _fail(error)
    summary = task_summary(human_task)
    form = task_form_class(human_task.form, summary["allow_send_back"])()
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                complete_task(task_id, current_user, request.form)
            except (NotFoundError, AccessError) as error:
                _fail(error)
            except (InputError, ConflictError, ProcessRunError) as error:
                db.session.rollback()
                flash(_("提交未成功：%(error)s", error=error_text(error)), "error")
                status = 400 if isinstance(error, InputError) else 409
                return _render_task(task_id, form, status)
            flash(_("任务「%(task)s」已办结。", task=shown_step_name(human_task.title)), "success")
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
    candidates = [u for u in delegate_candidates(human_task) if u.id != current_user.id] if human_task.status == "open" else []
    return render_template(
        "processes/task.html", task=human_task, form=form, summary=summary, events=events, delegate_candidates=candidates,
    ), status


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
        abort(403, _("您没有查看用户档案与业务记录的权限。"))
    try:
        process_instance = get_instance(instance_id)
    except NotFoundError as error:
        _fail(error)
    can_admin = has_permission(current_user, "process.admin", process_instance.company_id)
    admin_actions = [
        (action, label) for action, (label, allowed) in ACTIONS.items() if can_admin and process_instance.status in allowed
    ]
    return render_template(
        "processes/instance.html",
        instance=process_instance,
        events=instance_events(instance_id),
        chain=verify_chain(instance_id),
        lanes=user_lanes(current_user, process_instance.company_id),
        admin_actions=admin_actions,
        max_reason_chars=MAX_REASON_CHARS,
    )


def _admin_view(action):
    """Build the POST view of one administrator action on an instance (process.admin, with a reason)."""

    def view(instance_id):
        label = ACTIONS[action][0]
        try:
            changed = ACTION_FUNCTIONS[action](instance_id, current_user, request.form.get("reason", ""))
        except (NotFoundError, AccessError) as error:
            _fail(error)
        except (InputError, ConflictError, ProcessRunError) as error:
            db.session.rollback()
            flash(_("%(action)s未成功：%(error)s", action=translate_label(label), error=error_text(error)), "error")
        else:
            flash(
                _("%(action)s成功：流程 %(id)s 当前为「%(status)s」。", action=translate_label(label), id=instance_id,
                  status=translate_label(changed.status_label)),
                "success",
            )
        return redirect(url_for("processes.instance", instance_id=instance_id)), 303

    view.__name__ = f"{action}_instance"
    view.__doc__ = f"Run the administrator action {action} on an instance, with the reason from the form."
    return view


for _action in ACTIONS:
    bp.add_url_rule(
        f"/instances/<int:instance_id>/{_action}", endpoint=f"{_action}_instance",
        view_func=login_required(_admin_view(_action)), methods=["POST"],
    )


CONFIGURE_DENIED = _l("只有分公司管理员可以设置本公司的集团审批规则。")
# Settings page sections saved as a whole: form `section` -> (save function, error prefix, success message).
SETTINGS_SECTIONS = {
    "timers": (save_timer_settings, _l("期限未保存"), _l("已保存本公司的办理期限与定时设置。")),
    "options": (save_process_options, _l("计算方式未保存"), _l("已保存本公司的业务计算方式，此后发起的申请按新方式计算。")),
}


def _may_configure():
    return not current_user.company.is_headquarters and has_permission(current_user, "process.configure")


@bp.route("/settings", methods=["GET", "POST"])
@login_required
def settings():
    """Show and edit the company's escalation rules, one per process type."""
    if not _may_configure():
        abort(403, str(CONFIGURE_DENIED))
    company_id = current_user.company_id
    status = 200
    section = SETTINGS_SECTIONS.get(request.form.get("section")) if request.method == "POST" else None
    if section is not None:
        save, failed, saved = section
        try:
            save(company_id, request.form, current_user)
        except RuleError as error:
            db.session.rollback()
            flash(_("%(failure)s：%(error)s", failure=failed, error=error), "error")
            status = 400
        else:
            db.session.commit()
            flash(str(saved), "success")
            return redirect(url_for("processes.settings")), 303
    elif request.method == "POST":
        try:
            rule = save_rule(company_id, request.form.get("process_type", ""), request.form, current_user)
        except RuleError as error:
            db.session.rollback()
            flash(_("规则未保存：%(error)s", error=error), "error")
            status = 400
        else:
            db.session.commit()
            flash(_("已保存「%(process)s」的集团审批规则。", process=translate_label(rule.type_label)), "success")
            return redirect(url_for("processes.settings")), 303
    return render_template(
        "processes/settings.html", rows=rule_rows(company_id), waiver_categories=WAIVER_CATEGORIES,
        timers=timer_rows(company_id), timer_units=TIMER_UNITS, options=option_rows(company_id),
        decision_ids={process_type: decision_id for decision_id, process_type in DECISION_IDS.items()},
    ), status


def _may_import_group_calendar():
    return current_user.company.is_headquarters and has_permission(current_user, "process.template")


@bp.route("/calendar", methods=["GET", "POST"])
@login_required
def calendar():
    """Show one year of the company's working calendar and add, change or remove days, or import the published ones.

    A headquarters user who publishes group templates sees only the file import, which
    sets the days in every subsidiary's calendar.
    """
    group_import = _may_import_group_calendar()
    if not _may_configure() and not group_import:
        abort(403, _("只有分公司管理员可以设置本公司的工作日历，集团管理员可以为全部分公司导入放假安排。"))
    company_id = current_user.company_id
    year = request.values.get("year", type=int) or today_local().year
    if not MIN_YEAR <= year <= MAX_YEAR:
        abort(400, _("年份 %(year)s 超出范围，请选择 %(min)s 至 %(max)s 年。", year=year, min=MIN_YEAR, max=MAX_YEAR))
    status = 200
    import_errors = []
    if request.method == "POST":
        action = request.form.get("action", "save")
        if group_import and action != "import":
            abort(403, _("集团用户只能导入放假安排文件；逐日修改请由分公司管理员在本公司日历中进行。"))
        try:
            if action == "import":
                result = _import_calendar_file()
                import_errors = result.errors
                if import_errors:
                    raise CalendarError(_("文件中有 %(count)s 处错误，未导入任何日期；请按下列提示修改后重新导入。", count=len(import_errors)))
                year = result.year
                message = _import_message(result)
            elif action == "delete":
                day = delete_day(company_id, request.form.get("day"), current_user)
                message = _("已删除 %(day)s 的设置，该日恢复按周一至周五计算。", day=day.isoformat())
            elif action == "seed":
                added = seed_calendar(company_id, years=(year,), user=current_user)
                message = _("已导入 %(year)s 年国务院公布的节假日和调休上班日 %(count)s 天；已有设置的日期保持不变。", year=year, count=added)
                if not published_days({year}):
                    message = _("%(year)s 年的放假安排尚未收录，请导入放假安排文件或逐日添加。", year=year)
            else:
                row = save_day(company_id, request.form, current_user)
                year = row.day.year
                message = _("已将 %(day)s 设为「%(kind)s」。", day=row.day.isoformat(), kind=translate_label(row.kind_label))
        except (CalendarError, CalendarImportError) as error:
            db.session.rollback()
            flash(_("日历未保存：%(error)s", error=error), "error")
            status = 400
        else:
            db.session.commit()
            flash(message, "success")
            return redirect(url_for("processes.calendar", year=year)), 303
    holidays, workdays = year_summary(company_id, year)
    return render_template(
        "processes/calendar.html", year=year, days=[] if group_import else calendar_days(company_id, year), kinds=CALENDAR_KINDS,
        holidays=holidays, workdays=workdays, group_import=group_import, import_errors=import_errors,
        import_companies=target_companies(current_user) if group_import else [], builtin_days=len(published_days({year})),
        weekday=_weekday,
    ), status


def _weekday(day):
    """Name the weekday of `day` for the calendar table: 一 … 日 in Chinese, Mon … Sun in English."""
    return format_date(day, "EEEEE" if get_locale().language == "zh" else "EEE")


def _import_calendar_file():
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise CalendarImportError(_("没有选择文件；请选择一年放假安排的 CSV 或 Excel（.xlsx）文件后再导入。"))
    return import_calendar(upload.filename, upload.read(), target_companies(current_user), current_user)


def _import_message(result):
    added = sum(result.added.values())
    changed = sum(result.changed.values())
    return _(
        "已导入 %(year)s 年放假安排 %(days)s 天（%(companies)s）：新增 %(added)s 条、修改 %(changed)s 条；文件未列出的日期保持不变。",
        year=result.year, days=result.rows, companies=join_items(result.added), added=added, changed=changed,
    )


def _decision_json(decision):
    return {
        "decision_id": decision.decision_id,
        "process_type": decision.process_type,
        "label": _("%(process)s是否需集团审批", process=translate_label(decision.type_label)),
        "version": decision.version,
        "sha256": decision.sha256,
        "updated_at": decision.created_at.isoformat(),
        "xml_url": url_for("processes.decision_xml", decision_id=decision.decision_id),
        "save_url": url_for("processes.decision", decision_id=decision.decision_id),
    }


def _json_error(status, element_id, message):
    return jsonify({"ok": False, "errors": [{"element_id": element_id, "message": message}]}), status


@bp.route("/decisions")
@login_required
def decisions():
    """List the company's escalation decision tables as JSON, for the table editor."""
    if not _may_configure():
        return _json_error(403, "", str(CONFIGURE_DENIED))
    rows = ensure_decisions(current_user.company_id)
    db.session.commit()
    return jsonify({"decisions": [_decision_json(decision) for decision in rows]})


@bp.route("/decisions/<decision_id>.dmn")
@login_required
def decision_xml(decision_id):
    """Return the current DMN XML of one of the company's decision tables."""
    if not _may_configure():
        abort(403, str(CONFIGURE_DENIED))
    if decision_id not in DECISION_IDS:
        abort(404, _("没有名为「%(name)s」的决策表。", name=decision_id[:64]))
    decision = ensure_decision(current_user.company_id, DECISION_IDS[decision_id])
    db.session.commit()
    response = Response(decision.dmn_xml, mimetype="application/xml")
    response.headers["X-Decision-Version"] = str(decision.version)
    return response


@bp.route("/decisions/<decision_id>", methods=["GET", "POST"])
@login_required
def decision(decision_id):
    """GET: show one decision table read-only. POST (form field xml): validate it and store the next version; returns JSON."""
    if request.method == "POST":
        return _save_decision(decision_id)
    if not _may_configure():
        abort(403, str(CONFIGURE_DENIED))
    if decision_id not in DECISION_IDS:
        abort(404, _("没有名为「%(name)s」的决策表。", name=decision_id[:64]))
    process_type = DECISION_IDS[decision_id]
    version = ensure_decision(current_user.company_id, process_type)
    db.session.commit()
    return render_template(
        "processes/decision.html", decision=version, table=read_table(version.dmn_xml), variables=variables_for(process_type),
    )


def _save_decision(decision_id):
    if not _may_configure():
        return _json_error(403, "", str(CONFIGURE_DENIED))
    if decision_id not in DECISION_IDS:
        return _json_error(
            404, decision_id[:64], _("没有名为「%(name)s」的决策表；可选：%(choices)s。", name=decision_id[:64], choices=join_items(DECISION_IDS)),
        )
    try:
        version = save_decision(current_user.company_id, decision_id, request.form.get("xml", ""), current_user)
    except DecisionError as error:
        db.session.rollback()
        logger.info("User %s: decision %s of company %s rejected: %s", current_user.id, decision_id, current_user.company_id, error)
        return jsonify({"ok": False, "errors": [problem.as_dict() for problem in error.problems]}), 400
    db.session.commit()
    return jsonify({"ok": True, "version": version.version})

"""Field screens for the phone: my tasks and visits, and the result form of each.

Result forms post either as a plain form or, from the offline queue in
static/js/field-queue.js, with `Accept: application/json`; both go through the same
exactly-once services.
"""

import io
import logging
import uuid
from datetime import date

import sqlalchemy as sa
from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, send_file, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required
from flask_wtf.csrf import generate_csrf
from PIL import Image, UnidentifiedImageError

from app.extensions import db
from app.fieldwork.models import FINDINGS, VISIT_STATUSES, FieldPhoto, FieldSubmission, FieldVisit
from app.fieldwork.services import (
    BACK_CHARGE_STATUSES, Photo, assign_inspections, check_submission_id, get_visit, my_field_work, parse_meter_reading,
    site_photos, submit_task_result, submit_visit_result,
)
from app.forms.processes import task_form_class
from app.ids import parse_row_id
from app.network.models import Account
from app.org.models import User
from app.org.services import AccessError, has_permission, users_with_permission
from app.processes.access import ConflictError, InputError, NotFoundError, get_task
from app.processes.engine import ProcessRunError
from app.processes.services import task_summary
from app.processes.step_names import shown_step_name

logger = logging.getLogger(__name__)
bp = Blueprint("fieldwork", __name__, url_prefix="/field")
# Maximum length, in pixels, of the longer side of a photo thumbnail.
THUMBNAIL_PX = 240
# Most suspended accounts one inspection page lists for assignment.
ASSIGN_PAGE_SIZE = 200


def _require(permission):
    if not has_permission(current_user, permission):
        abort(403, _("您没有现场作业的权限。") if permission == "fieldwork.do" else _("您没有派发稽查任务的权限。"))


def _wants_json():
    return request.accept_mimetypes.best == "application/json"


def _photos():
    return [Photo(upload.filename or "photo", upload.read()) for upload in request.files.getlist("photos") if upload.filename]


def _result(outcome, done_message, back):
    message = _("该结果此前已提交，本次未重复登记。") if outcome.duplicate else done_message
    # Flashed for the phone's script too: it follows `redirect`, and the list page then confirms the result.
    flash(message, "success")
    if _wants_json():
        return jsonify(ok=True, duplicate=outcome.duplicate, message=message, redirect=url_for("fieldwork.index"))
    return redirect(url_for("fieldwork.index"))


def _failure(error, back):
    status = 409 if isinstance(error, ConflictError) else 400
    if _wants_json():
        return jsonify(ok=False, message=str(error)), status
    flash(_("提交未成功：%(error)s", error=error), "error")
    return redirect(back, code=303)


@bp.route("/")
@login_required
def index():
    """The field user's open tasks and visits, with address and account facts."""
    _require("fieldwork.do")
    tasks, visits = my_field_work(current_user)
    return render_template("fieldwork/index.html", tasks=tasks, visits=visits)


@bp.route("/csrf")
@login_required
def csrf():
    """A fresh CSRF token for results the phone kept while offline longer than a token lives."""
    return jsonify(csrf_token=generate_csrf())


@bp.route("/tasks/<int:task_id>", methods=["GET", "POST"])
@login_required
def task(task_id):
    """Show a valve or survey task with the account facts, and take its result with photos."""
    _require("fieldwork.do")
    try:
        human_task = get_task(task_id, current_user)
    except (NotFoundError, AccessError) as error:
        abort(404, str(error))
    form = task_form_class(human_task.form)()
    back = url_for("fieldwork.task", task_id=task_id)
    if request.method == "POST":
        if not form.validate_on_submit():
            messages = [message for messages in form.errors.values() for message in messages]
            return _failure(InputError(_("；").join(str(message) for message in messages)), back)
        try:
            outcome = submit_task_result(
                current_user, task_id, check_submission_id(request.form.get("submission_id")), request.form,
                photos=_photos(), meter_reading=parse_meter_reading(request.form.get("meter_reading")),
            )
        except (NotFoundError, AccessError) as error:
            abort(404, str(error))
        except (InputError, ConflictError, ProcessRunError) as error:
            return _failure(error, back)
        return _result(outcome, _("「%(title)s」已完成。", title=shown_step_name(human_task.title)), back)
    return render_template(
        "fieldwork/task.html", task=human_task, form=form, summary=task_summary(human_task), submission_id=str(uuid.uuid4()),
    )


@bp.route("/visits/<int:visit_id>", methods=["GET", "POST"])
@login_required
def visit(visit_id):
    """Show an inspection visit and take its finding; a violation at a suspended dwelling starts a back-charge."""
    _require("fieldwork.do")
    try:
        field_visit = get_visit(visit_id, current_user)
    except NotFoundError as error:
        abort(404, str(error))
    account = db.session.get(Account, field_visit.account_id)
    back = url_for("fieldwork.visit", visit_id=visit_id)
    if request.method == "POST":
        try:
            visited_on = date.fromisoformat(request.form.get("visited_on", ""))
        except ValueError:
            return _failure(InputError(_("稽查日期无效；请选择日期。")), back)
        try:
            outcome = submit_visit_result(
                current_user, visit_id, check_submission_id(request.form.get("submission_id")),
                request.form.get("finding", ""), visited_on, comment=request.form.get("comment", "")[:500],
                photos=_photos(), meter_reading=parse_meter_reading(request.form.get("meter_reading")),
            )
        except (InputError, ConflictError, ProcessRunError, AccessError) as error:
            return _failure(error, back)
        return _result(outcome, _("稽查结果已登记。"), back)
    return render_template(
        "fieldwork/visit.html", visit=field_visit, account=account, findings=FINDINGS, today=date.today(),
        submission_id=str(uuid.uuid4()), back_charged=account.billing_status in BACK_CHARGE_STATUSES,
    )


@bp.app_context_processor
def _fieldwork_helpers():
    return {"site_photos": site_photos}


def _readable_photo(photo_id):
    stored = db.session.scalar(sa.select(FieldPhoto).filter_by(id=photo_id))
    if stored is None or not has_permission(current_user, "account.read", stored.company_id):
        abort(404, _("照片不存在，或您无权查看。"))
    return stored


@bp.route("/photos/<int:photo_id>")
@login_required
def photo(photo_id):
    """Send a site photo to staff of its company who may read accounts."""
    stored = _readable_photo(photo_id)
    return send_file(io.BytesIO(stored.content), mimetype=stored.content_type, download_name=stored.filename)


@bp.route("/photos/<int:photo_id>/thumbnail")
@login_required
def photo_thumbnail(photo_id):
    """Send a JPEG of a site photo scaled to THUMBNAIL_PX on its longest side, to the same readers as the photo."""
    stored = _readable_photo(photo_id)
    try:
        with Image.open(io.BytesIO(stored.content)) as image:
            image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            output = io.BytesIO()
            image.convert("RGB").save(output, format="JPEG", quality=80)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as error:
        # The upload check reads only the leading bytes, so a damaged image can be stored; the page then links the original.
        logger.warning("Site photo %s could not be scaled for a thumbnail: %s", photo_id, error)
        return send_file(io.BytesIO(stored.content), mimetype=stored.content_type, download_name=stored.filename)
    output.seek(0)
    response = send_file(output, mimetype="image/jpeg", download_name=f"thumbnail-{photo_id}.jpg")
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


@bp.route("/inspections", methods=["GET", "POST"])
@login_required
def inspections():
    """Assign inspections of suspended and shut-off dwellings to a field user, and list recent visits."""
    _require("fieldwork.assign")
    if request.method == "POST":
        account_ids = [parse_row_id(value) for value in request.form.getlist("account_id")]
        field_user_id = parse_row_id(request.form.get("field_user_id"))
        if None in account_ids or field_user_id is None:
            abort(400, _("用户或外勤人员编号无效。"))
        try:
            visits = assign_inspections(current_user, account_ids, field_user_id, request.form.get("note", ""))
        except (InputError, AccessError) as error:
            flash(str(error), "error")
        else:
            flash(_("已派发 %(count)s 户稽查任务。", count=len(visits)), "success")
        return redirect(url_for("fieldwork.inspections"), code=303)
    accounts = db.session.scalars(
        sa.select(Account).where(Account.billing_status.in_(BACK_CHARGE_STATUSES)).order_by(Account.account_no).limit(ASSIGN_PAGE_SIZE)
    ).all()
    field_users = users_with_permission(current_user.company_id, "fieldwork.do")
    recent = db.session.execute(
        sa.select(FieldVisit, Account, User)
        .join(Account, Account.id == FieldVisit.account_id)
        .join(User, User.id == FieldVisit.assigned_to_id)
        .order_by(FieldVisit.id.desc()).limit(50)
    ).all()
    photos = {}
    visit_ids = [row[0].id for row in recent]
    for visit_id, photo_id in db.session.execute(
        sa.select(FieldSubmission.target_id, FieldPhoto.id)
        .join(FieldPhoto, FieldPhoto.submission_id == FieldSubmission.id)
        .where(FieldSubmission.target_kind == "visit", FieldSubmission.target_id.in_(visit_ids))
        .order_by(FieldPhoto.id)
    ):
        photos.setdefault(visit_id, []).append(photo_id)
    return render_template(
        "fieldwork/inspections.html", accounts=accounts, field_users=field_users, recent=recent, photos=photos, statuses=VISIT_STATUSES,
    )

"""Field work: the tasks and visits of a field user, and their results sent from a phone.

A phone may send the same result several times when the network drops; each result
carries a submission id that the phone chose, and only the first arrival is applied.
"""

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa
from flask_babel import gettext as _
from sqlalchemy.exc import IntegrityError

from app.extensions import db
from app.fieldwork.models import FINDINGS, FieldPhoto, FieldSubmission, FieldVisit, utcnow
from app.network.models import Account
from app.network.valves import shut_off_counts
from app.org.models import Company, User
from app.org.services import has_permission, require_permission
from app.processes.access import ConflictError, InputError, NotFoundError, get_task, inbox_tasks
from app.processes.fields import clean_task_values, task_fields
from app.processes.models import HumanTask
from app.processes.step_names import shown_step_name
from app.processes.services import claim_task, complete_task, start_process

logger = logging.getLogger(__name__)

# Task forms a field user fills in on site.
FIELD_FORMS = ("valve_close", "valve_open", "survey")
MAX_PHOTOS = 5
MAX_PHOTO_BYTES = 8 * 1024 * 1024
# Leading bytes of the image formats a phone camera produces.
PHOTO_SIGNATURES = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}
SUBMISSION_ID_CHARS = set("0123456789abcdef-")
# Statuses in which a violation is back-charged; a violation of a normal account is recorded only.
BACK_CHARGE_STATUSES = ("suspended", "forced_off")


@dataclass
class Photo:
    """An uploaded photo before it is stored: its name and bytes."""

    filename: str
    content: bytes


@dataclass
class Outcome:
    """What a submission did: the stored row and whether it was a resend of an earlier one."""

    submission: FieldSubmission
    duplicate: bool


@dataclass
class PhotoGroup:
    """The photos of one field result: what was done, when, by whom, and the ids of its photos."""

    title: str
    received_at: datetime
    user_name: str
    photo_ids: list = field(default_factory=list)


def site_photos(account_id, instance_id=None):
    """Return the site photos of an account as PhotoGroups, oldest result first.

    With `instance_id`, only the photos of that process instance's field tasks. Reads
    through the tenant scope, so another company's account or instance gives no photos.
    """
    statement = (
        sa.select(FieldSubmission, FieldPhoto.id, User.name)
        .join(FieldPhoto, FieldPhoto.submission_id == FieldSubmission.id)
        .join(User, User.id == FieldSubmission.user_id)
        .where(FieldSubmission.account_id == account_id)
        .order_by(FieldSubmission.received_at, FieldSubmission.id, FieldPhoto.id)
    )
    if instance_id is not None:
        task_ids = sa.select(HumanTask.id).where(HumanTask.instance_id == instance_id)
        statement = statement.where(FieldSubmission.target_kind == "task", FieldSubmission.target_id.in_(task_ids))
    groups = {}
    for submission, photo_id, user_name in db.session.execute(statement):
        if submission.id not in groups:
            groups[submission.id] = PhotoGroup(_submission_title(submission), submission.received_at, user_name)
        groups[submission.id].photo_ids.append(photo_id)
    return list(groups.values())


def _submission_title(submission):
    if submission.target_kind == "task":
        task = db.session.get(HumanTask, submission.target_id)
        return shown_step_name(task.title) if task else ""
    visit = db.session.get(FieldVisit, submission.target_id)
    return visit.kind_label if visit else ""


def my_field_work(user):
    """Return (process field tasks, open visits) of a field user, oldest first."""
    tasks = [row for row in inbox_tasks(user) if row[0].form in FIELD_FORMS]
    visits = db.session.execute(
        sa.select(FieldVisit, Account)
        .join(Account, Account.id == FieldVisit.account_id)
        .where(FieldVisit.assigned_to_id == user.id, FieldVisit.status == "open")
        .order_by(FieldVisit.created_at, FieldVisit.id)
    ).all()
    return tasks, visits


def check_submission_id(value):
    """Return a phone's submission id, or raise InputError: a UUID in its 36-character text form."""
    value = (value or "").strip().lower()
    if len(value) != 36 or not set(value) <= SUBMISSION_ID_CHARS or value.count("-") != 4:
        raise InputError(_("提交编号无效；请刷新页面后重新填写。"))
    return value


def parse_meter_reading(value):
    """Return a meter reading as Decimal (GJ, up to 3 places), None when blank, or raise InputError."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        reading = Decimal(text)
    except InvalidOperation:
        raise InputError(_("表读数「%(value)s」不是数字；请填写表盘上的数字，如 1234.567。", value=text[:20])) from None
    if not reading.is_finite() or reading < 0 or reading >= Decimal("1e11") or reading != reading.quantize(Decimal("0.001")):
        raise InputError(_("表读数「%(value)s」无效；应为不小于 0 的数字，最多 3 位小数。", value=text[:20]))
    return reading


def check_photos(photos):
    """Raise InputError unless every photo is a JPEG or PNG within the size and count limits."""
    if len(photos) > MAX_PHOTOS:
        raise InputError(_(
            "最多上传 %(max)s 张照片，本次有 %(count)s 张；请删去多余的照片。", max=MAX_PHOTOS, count=len(photos)
        ))
    for photo in photos:
        if not photo.content:
            raise InputError(_("照片「%(name)s」是空文件；请重新拍照。", name=photo.filename))
        if len(photo.content) > MAX_PHOTO_BYTES:
            raise InputError(_(
                "照片「%(name)s」超过 %(size)s MB；请降低相机分辨率后重拍。", name=photo.filename, size=MAX_PHOTO_BYTES // (1024 * 1024)
            ))
        if _photo_type(photo.content) is None:
            raise InputError(_("照片「%(name)s」不是 JPEG 或 PNG 图片；请用相机拍照后上传。", name=photo.filename))


def _photo_type(content):
    return next((kind for signature, kind in PHOTO_SIGNATURES.items() if content.startswith(signature)), None)


def _existing(company_id, submission_id):
    return db.session.scalar(
        sa.select(FieldSubmission).filter_by(company_id=company_id, submission_id=submission_id)
    )


def _earlier_outcome(user, submission_id, target_kind, target_id):
    """Return the duplicate Outcome of an earlier arrival of this submission, or None when there is none.

    Raises ConflictError when the id was stored for another task, visit or user, because
    answering "already submitted" then would drop this result unseen.
    """
    earlier = _existing(user.company_id, submission_id)
    if earlier is None:
        return None
    if (earlier.target_kind, earlier.target_id, earlier.user_id) != (target_kind, target_id, user.id):
        raise ConflictError(_(
            "提交编号 %(id)s 已用于另一项现场结果，本次结果未登记；请刷新页面后重新填写并提交。", id=submission_id,
        ))
    return Outcome(earlier, duplicate=True)


def _duplicate_or_raise(user, submission_id, target_kind, target_id, error):
    """Return the Outcome of an arrival that committed while this one was checked, or re-raise `error`."""
    db.session.rollback()
    outcome = _earlier_outcome(user, submission_id, target_kind, target_id)
    if outcome is None:
        raise error
    return outcome


def _store(user, submission_id, target_kind, target_id, account_id, values, photos, meter_reading):
    submission = FieldSubmission(
        company_id=user.company_id, submission_id=submission_id, user_id=user.id, target_kind=target_kind,
        target_id=target_id, account_id=account_id, meter_reading=meter_reading, values=values,
    )
    db.session.add(submission)
    db.session.flush()
    for photo in photos:
        db.session.add(FieldPhoto(
            company_id=user.company_id, submission_id=submission.id, account_id=account_id,
            filename=photo.filename[:255] or "photo", content_type=_photo_type(photo.content),
            sha256=hashlib.sha256(photo.content).hexdigest(), size=len(photo.content), content=photo.content,
        ))
    db.session.flush()
    return submission


def _apply_once(user, submission_id, target_kind, target_id, apply):
    """Run `apply` (which stores and commits a submission) and return its Outcome.

    When it fails because the task or row was taken meanwhile, a concurrent arrival of
    the same submission may have won; its Outcome is returned as a duplicate. Any other
    failure rolls back and re-raises, so nothing is half-stored.
    """
    try:
        return Outcome(apply(), duplicate=False)
    except (ConflictError, IntegrityError) as error:
        return _duplicate_or_raise(user, submission_id, target_kind, target_id, error)
    except Exception:
        db.session.rollback()
        raise


def submit_task_result(user, task_id, submission_id, values, photos=(), meter_reading=None):
    """Apply a field task's result from a phone once: claim if needed, store photos and complete the task.

    Returns Outcome. A resend of an applied submission returns the first one with
    duplicate=True and changes nothing. Raises InputError, ConflictError, NotFoundError
    or AccessError; nothing is stored then.
    """
    earlier = _earlier_outcome(user, submission_id, "task", task_id)
    if earlier is not None:
        return earlier
    check_photos(photos)
    task = get_task(task_id, user)
    if task.form not in FIELD_FORMS:
        raise NotFoundError(_("任务 %(id)s 不是现场作业任务；请在待办中办理。", id=task_id))
    # Checked before the claim, which commits, so that a rejected result leaves the task as it was.
    clean_task_values(task.form, values)
    stored_values = {spec.name: str(values.get(spec.name, "")) for spec in task_fields(task.form)}
    if task.claimed_by_id is None:
        try:
            claim_task(task_id, user)
        except ConflictError as error:
            return _duplicate_or_raise(user, submission_id, "task", task_id, error)

    def apply():
        submission = _store(user, submission_id, "task", task.id, task.instance.account_id, stored_values, photos, meter_reading)
        complete_task(task_id, user, values)
        return submission

    outcome = _apply_once(user, submission_id, "task", task_id, apply)
    if not outcome.duplicate:
        logger.info("Field submission %s completed task %s with %s photos", submission_id, task_id, len(photos))
    return outcome


def get_visit(visit_id, user):
    """Return an open or finished visit assigned to the user, or raise NotFoundError."""
    visit = db.session.scalar(sa.select(FieldVisit).filter_by(id=visit_id, assigned_to_id=user.id))
    if visit is None:
        raise NotFoundError(_("稽查任务 %(id)s 不存在，或未派给您。", id=visit_id))
    return visit


def submit_visit_result(user, visit_id, submission_id, finding, visited_on, comment="", photos=(), meter_reading=None):
    """Record an inspection's finding once; a violation at a suspended or shut-off dwelling starts a back-charge.

    Returns Outcome; see submit_task_result for resends and errors.
    """
    earlier = _earlier_outcome(user, submission_id, "visit", visit_id)
    if earlier is not None:
        return earlier
    require_permission(user, "fieldwork.do", user.company_id)
    if finding not in FINDINGS:
        raise InputError(_("稽查结果「%(value)s」无效；请从列表中选择。", value=finding[:20]))
    if finding != "none" and not photos:
        raise InputError(_("发现违规时必须上传现场照片。"))
    check_photos(photos)
    visit = get_visit(visit_id, user)
    if visit.status != "open":
        return _duplicate_or_raise(user, submission_id, "visit", visit_id, ConflictError(
            _("稽查任务 %(id)s 已完成，不能重复提交。", id=visit_id) if visit.status == "done"
            else _("稽查任务 %(id)s 已取消，不能重复提交。", id=visit_id)
        ))
    account = db.session.get(Account, visit.account_id)
    values = {"finding": finding, "visited_on": visited_on.isoformat(), "comment": comment}

    def apply():
        submission = _store(user, submission_id, "visit", visit.id, account.id, values, photos, meter_reading)
        visit.status, visit.finding, visit.visited_on, visit.completed_at = "done", finding, visited_on, utcnow()
        if finding != "none" and account.billing_status in BACK_CHARGE_STATUSES:
            # start_process commits the submission and the visit together with the new instance.
            instance = start_process(
                "back_charge", account.id, user,
                {"inspected_on": visited_on.isoformat(), "finding": finding, "comment": comment or FINDINGS[finding]},
                permission="fieldwork.do",
            )
            visit.instance_id = instance.id
        db.session.commit()
        return submission

    outcome = _apply_once(user, submission_id, "visit", visit_id, apply)
    if not outcome.duplicate:
        logger.info("Field submission %s recorded visit %s with finding %s", submission_id, visit_id, finding)
    return outcome


def assign_inspections(supervisor, account_ids, field_user_id, note=""):
    """Create one open inspection per account for a field user of the supervisor's company; returns the visits."""
    require_permission(supervisor, "fieldwork.assign", supervisor.company_id)
    field_user = db.session.scalar(sa.select(User).filter_by(id=field_user_id, company_id=supervisor.company_id))
    if field_user is None or not has_permission(field_user, "fieldwork.do", supervisor.company_id):
        raise InputError(_("请选择本公司有现场作业权限的外勤人员。"))
    accounts = db.session.scalars(sa.select(Account).where(Account.id.in_(account_ids))).all()
    if not accounts or len(accounts) != len(set(account_ids)):
        raise InputError(_("请至少选择一户本公司的用户。"))
    visits = []
    for account in accounts:
        visit = FieldVisit(
            company_id=supervisor.company_id, kind="inspection", account_id=account.id, assigned_to_id=field_user.id,
            created_by_id=supervisor.id, note=note[:255],
        )
        db.session.add(visit)
        visits.append(visit)
    db.session.commit()
    logger.info("User %s assigned %s inspections to user %s", supervisor.id, len(visits), field_user.id)
    return visits


def field_progress():
    """Per subsidiary: open valve and survey tasks, valves shut off now, inspections done of assigned, violations found.

    Returns rows of dicts in company-number order; one grouped query per figure.
    """
    def per_company(statement):
        return dict(db.session.execute(statement).all())

    open_tasks = per_company(
        sa.select(HumanTask.company_id, sa.func.count()).where(HumanTask.status == "open", HumanTask.form.in_(FIELD_FORMS))
        .group_by(HumanTask.company_id)
    )
    closed_valves = shut_off_counts(utcnow())
    assigned = per_company(sa.select(FieldVisit.company_id, sa.func.count()).group_by(FieldVisit.company_id))
    done = per_company(sa.select(FieldVisit.company_id, sa.func.count()).where(FieldVisit.status == "done").group_by(FieldVisit.company_id))
    violations = per_company(
        sa.select(FieldVisit.company_id, sa.func.count()).where(FieldVisit.status == "done", FieldVisit.finding != "none")
        .group_by(FieldVisit.company_id)
    )
    companies = db.session.scalars(sa.select(Company).where(Company.is_headquarters.is_(False)).order_by(Company.number)).all()
    return [
        {
            "code": company.code, "name": company.name, "open_tasks": open_tasks.get(company.id, 0),
            "closed_valves": closed_valves.get(company.id, 0), "inspections_done": done.get(company.id, 0),
            "inspections_assigned": assigned.get(company.id, 0), "violations": violations.get(company.id, 0),
        }
        for company in companies
    ]

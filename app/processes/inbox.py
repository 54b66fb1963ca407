"""The inbox page: filtered, sorted and paged task lists, and delegating a task to a colleague.

Paging is by keyset (the sort value and the id of the last row shown), so a deep page
costs the same index range scan as the first one. Visibility is decided in SQL. A
company user sees the tasks of their company in the lanes they may act in. A group user
sees the group lanes of the companies where they hold the group approval permission.
"""

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from flask_babel import gettext as _

from app.extensions import db
from app.i18n import N_, join_items, translate_label
from app.ids import parse_row_id
from app.locking import lock_row
from app.network.models import Account
from app.org.models import Company, User
from app.org.services import has_permission
from app.processes.access import (
    GROUP_LANES, LANE_PERMISSIONS, ConflictError, InputError, get_task, user_lanes,
)
from app.processes.audit import record_event
from app.processes.lanes import lane_name, role_names
from app.processes.models import PROCESS_TYPES, TASK_STATUSES, HumanTask, ProcessInstance
from app.processes.step_names import shown_step_name
from app.tenancy import SYSTEM_SCOPE, scoped

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
# Largest page the JSON API serves.
MAX_PAGE_SIZE = 200
SORTS = {"created": N_("生成时间（早→晚）"), "created_desc": N_("生成时间（晚→早）"), "due": N_("办理期限（早→晚）")}


def _labels(labels):
    """Join "label (code)" of a code -> label dict, for the choices of an error message.

    The code is the value the query string and the API take, so the reader can send it.
    """
    return join_items(_("%(name)s（%(code)s）", name=translate_label(label), code=code) for code, label in labels.items())


@dataclass(frozen=True)
class InboxFilters:
    """Inbox query options: status, process type, company (group users), account number prefix, overdue only, sort and page cursor."""

    status: str = "open"
    process_type: str = ""
    company_id: int | None = None
    account_no: str = ""
    overdue: bool = False
    sort: str = "created"
    # "<sort value ISO>|<id>" of the last row of the previous page; empty for the first page.
    after: str = ""


def parse_filters(args):
    """Build InboxFilters from query-string values, or raise InputError naming the bad value."""
    status = args.get("status") or "open"
    if status not in TASK_STATUSES:
        raise InputError(_("状态「%(value)s」无效；可选：%(choices)s。", value=status[:20], choices=_labels(TASK_STATUSES)))
    process_type = args.get("process_type") or ""
    if process_type and process_type not in PROCESS_TYPES:
        raise InputError(_("业务类型「%(value)s」无效；可选：%(choices)s。", value=process_type[:20], choices=_labels(PROCESS_TYPES)))
    sort = args.get("sort") or "created"
    if sort not in SORTS:
        raise InputError(_("排序方式「%(value)s」无效；可选：%(choices)s。", value=sort[:20], choices=_labels(SORTS)))
    company_text = (args.get("company_id") or "").strip()
    if company_text and not company_text.isdigit():
        raise InputError(_("公司编号「%(value)s」无效，应为数字。", value=company_text[:20]))
    account_no = (args.get("account_no") or "").strip()
    if len(account_no) > 32 or (account_no and not account_no.isalnum()):
        raise InputError(_("用户编号「%(value)s」无效：只能是不超过 32 位的字母或数字。", value=account_no[:32]))
    after = (args.get("after") or "").strip()
    if after:
        _parse_cursor(after)
    return InboxFilters(
        status=status, process_type=process_type, company_id=int(company_text) if company_text else None,
        account_no=account_no, overdue=args.get("overdue") in ("1", "on", "true"), sort=sort, after=after,
    )


def _parse_cursor(after):
    value, separator, task_id = after.rpartition("|")
    try:
        moment = datetime.fromisoformat(value)
        number = int(task_id)
    except ValueError:
        moment = number = None
    if not separator or moment is None:
        raise InputError(_("分页参数无效，请从第一页重新浏览。"))
    return moment, number


def _sort_column(sort):
    return HumanTask.due_at if sort == "due" else HumanTask.created_at


def _visibility(statement, user):
    """Restrict a HumanTask query to what `user` may act on; returns None when nothing is visible."""
    if user.company.is_headquarters:
        with scoped(SYSTEM_SCOPE):
            company_ids = list(db.session.scalars(sa.select(Company.id).where(Company.is_headquarters.is_(False))))
        allowed = [cid for cid in company_ids if has_permission(user, LANE_PERMISSIONS["group_approver"], cid)]
        if not allowed:
            return None
        return statement.where(HumanTask.lane_role.in_(GROUP_LANES), HumanTask.company_id.in_(allowed))
    lanes = user_lanes(user, user.company_id)
    if not lanes:
        return None
    return statement.where(HumanTask.company_id == user.company_id, HumanTask.lane_role.in_(sorted(lanes)))


def inbox_page(user, filters, page_size=PAGE_SIZE, now=None):
    """Return (rows, next cursor or '') of the tasks `user` may act on, as (task, account, company) rows."""
    now = now or datetime.now(timezone.utc)
    column = _sort_column(filters.sort)
    descending = filters.sort == "created_desc"
    statement = sa.select(HumanTask).where(HumanTask.status == filters.status)
    statement = _visibility(statement, user)
    if statement is None:
        return [], ""
    if filters.process_type:
        statement = statement.where(HumanTask.process_type == filters.process_type)
    if filters.company_id is not None:
        statement = statement.where(HumanTask.company_id == filters.company_id)
    if filters.account_no:
        account_ids = sa.select(Account.id).where(Account.account_no.startswith(filters.account_no, autoescape=True))
        statement = statement.where(HumanTask.account_id.in_(account_ids))
    if filters.overdue:
        statement = statement.where(HumanTask.due_at < now)
    if filters.sort == "due":
        statement = statement.where(HumanTask.due_at.is_not(None))
    if filters.after:
        value, last_id = _parse_cursor(filters.after)
        if descending:
            statement = statement.where(sa.or_(column < value, sa.and_(column == value, HumanTask.id < last_id)))
        else:
            statement = statement.where(sa.or_(column > value, sa.and_(column == value, HumanTask.id > last_id)))
    order = (column.desc(), HumanTask.id.desc()) if descending else (column, HumanTask.id)
    tasks = db.session.scalars(statement.order_by(*order).limit(page_size + 1)).all()
    more = len(tasks) > page_size
    tasks = tasks[:page_size]
    rows = _with_accounts(tasks)
    cursor = ""
    if more and tasks:
        last = tasks[-1]
        cursor = f"{getattr(last, column.key).isoformat()}|{last.id}"
    return rows, cursor


def _with_accounts(tasks):
    """Attach each task's account and company with one query each, keeping the task order."""
    account_ids = {task.account_id for task in tasks if task.account_id is not None}
    instance_ids = {task.instance_id for task in tasks if task.account_id is None}
    if instance_ids:
        # Rows written before the inbox stored the account read it from their instance.
        pairs = db.session.execute(sa.select(ProcessInstance.id, ProcessInstance.account_id).where(ProcessInstance.id.in_(instance_ids))).all()
        by_instance = dict(pairs)
        account_ids |= set(by_instance.values())
    else:
        by_instance = {}
    accounts = {a.id: a for a in db.session.scalars(sa.select(Account).where(Account.id.in_(account_ids)))} if account_ids else {}
    company_ids = {task.company_id for task in tasks}
    with scoped(SYSTEM_SCOPE):
        companies = {c.id: c for c in db.session.scalars(sa.select(Company).where(Company.id.in_(company_ids)))} if company_ids else {}
    return [
        (task, accounts.get(task.account_id or by_instance.get(task.instance_id)), companies.get(task.company_id))
        for task in tasks
    ]


def is_overdue(task, now=None):
    """True when an open task is past its due time."""
    if task.status != "open" or task.due_at is None:
        return False
    due = task.due_at if task.due_at.tzinfo else task.due_at.replace(tzinfo=timezone.utc)
    return due < (now or datetime.now(timezone.utc))


def delegate_candidates(task):
    """Users who may take over a task: active users of the task's company (HQ for group lanes) who may act in its lane."""
    with scoped(SYSTEM_SCOPE):
        if task.lane_role in GROUP_LANES:
            users = db.session.scalars(
                sa.select(User).join(Company, Company.id == User.company_id).where(Company.is_headquarters.is_(True)).order_by(User.username)
            ).all()
        else:
            users = db.session.scalars(sa.select(User).where(User.company_id == task.company_id).order_by(User.username)).all()
    return [u for u in users if getattr(u, "is_active", True) and task.lane_role in user_lanes(u, task.company_id)]


def delegate_task(task_id, user, target_user_id, comment=""):
    """Hand a task to a colleague who may act in its lane; the task becomes claimed by them.

    The user must be able to act on the task, and the task must be unclaimed or claimed
    by the user. Raises NotFoundError, AccessError, InputError and ConflictError.
    """
    task = get_task(task_id, user)
    text = (comment or "").strip()
    if len(text) > 500:
        raise InputError(_("转办说明共 %(count)s 字，超过 500 字上限。", count=len(text)))
    candidates = {candidate.id: candidate for candidate in delegate_candidates(task)}
    target = candidates.get(parse_row_id(target_user_id))
    if target is None:
        raise InputError(_("转办对象「%(value)s」无效：只能转给本公司有「%(role)s」角色的其他用户。", value=str(target_user_id)[:20],
                           role=lane_name(task.lane_role, role_names(task.company_id))))
    if target.id == user.id:
        raise InputError(_("不能转办给自己；请选择其他同事。"))
    instance = lock_row(ProcessInstance, task.instance_id)
    db.session.refresh(task)
    if task.status != "open":
        raise ConflictError(_("任务「%(task)s」已不是待办，不能转办。", task=shown_step_name(task.title)))
    if instance.status != "running":
        raise ConflictError(_("流程 %(id)s 当前为「%(status)s」，不能转办。", id=instance.id, status=translate_label(instance.status_label)))
    if task.claimed_by_id not in (None, user.id):
        raise ConflictError(_("任务「%(task)s」已由 %(name)s 签收，只有签收人可以转办。", task=shown_step_name(task.title), name=task.claimed_by_name))
    task.claimed_by_id = target.id
    task.claimed_by_name = target.name
    task.delegated_to_id = target.id
    task.delegated_to_name = target.name
    record_event(instance, "delegated", user=user, task_name=task.title, comment=text,
                 data={"from_user_id": user.id, "to_user_id": target.id, "to_name": target.name})
    db.session.commit()
    logger.info("User %s delegated task %s to user %s", user.id, task.id, target.id)
    return task

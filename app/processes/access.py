"""Who may see and act on process tasks, and row locking per instance.

Company staff act in the lanes whose role code they hold in their own company; the lane
group_approver resolves to headquarters users holding process.group_approve. The tenant
scope already hides other companies' rows, so a task outside the user's companies is
simply not found.
"""

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, with_expression
from flask_babel import gettext as _

from app.extensions import db
from app.locking import RowLock
from app.network.models import Account
from app.org.models import Company, CompanyFunction, Role, UserRole
from app.org.permissions import PERMISSIONS
from app.org.services import RIGHTS_STAMP, AccessError, has_permission
from app.processes.lanes import lane_name, role_names
from app.processes.models import ACTIVE_STATUSES, HumanTask, ProcessEvent, ProcessInstance
from app.processes.step_names import shown_step_name
from app.processes.timers import remember_timing_stamp
from app.tariffs.rates import TARIFF_STAMP
from app.tenancy import SYSTEM_SCOPE, scoped

# Lane (role code) -> the permission a user needs to act in it.
LANE_PERMISSIONS = {
    "clerk": "process.start",
    "company_approver": "process.approve",
    "finance": "process.finance",
    "group_approver": "process.group_approve",
    "field_staff": "fieldwork.do",
}
GROUP_LANES = {"group_approver"}


class ProcessError(Exception):
    """Base of the errors a process action reports to the user."""


class NotFoundError(ProcessError):
    """The account, instance or task does not exist or is outside the user's companies."""


class ConflictError(ProcessError):
    """The task or account changed since the user loaded it (already claimed, completed or running)."""


class InputError(ProcessError):
    """A submitted value is missing or invalid; the message names it and the fix."""


def user_lanes(user, company_id):
    """Lanes of `company_id`'s instances in which `user` may act."""
    if user.company.is_headquarters:
        return {lane for lane in GROUP_LANES if has_permission(user, LANE_PERMISSIONS[lane], company_id)}
    if user.company_id != company_id:
        return set()
    roles, functions = _roles_and_functions(user.id, company_id)
    permissions = {permission for role in roles for permission in role.permissions}
    codes = {role.code for role in roles if role.company_id == company_id} & set(LANE_PERMISSIONS)
    codes -= GROUP_LANES
    return {
        lane for lane in codes
        if LANE_PERMISSIONS[lane] in permissions and PERMISSIONS[LANE_PERMISSIONS[lane]][0] in functions
    }


# Built once, because building and hashing them on every step was a measurable part of its
# CPU time. The last branch returns the company's rights_stamp from the same snapshot.
_ROLES_AND_FUNCTIONS = sa.union_all(
    sa.select(sa.literal("role").label("source"), Role.code.label("code"), Role.company_id.label("company_id"),
              Role.permissions.label("permissions"))
    .join(UserRole, UserRole.role_id == Role.id)
    .where(UserRole.user_id == sa.bindparam("user_id")),
    sa.select(
        sa.literal("function"), CompanyFunction.function, CompanyFunction.company_id, sa.cast(sa.null(), Role.permissions.type),
    ).where(CompanyFunction.company_id == sa.bindparam("company_id")),
    sa.select(
        sa.literal("stamp"), Company.rights_stamp, Company.id, sa.cast(sa.null(), Role.permissions.type),
    ).where(Company.id == sa.bindparam("company_id")),
)


@dataclass(frozen=True)
class RoleRights:
    """A role's code, company and permissions as the lane check reads them."""

    code: str
    company_id: int
    permissions: frozenset


# The task and its instance's open tasks; company_id lets the (company_id, instance_id,
# spiff_task_id) unique index find the open tasks.
_TASK_AND_OPEN_TASKS = (
    sa.select(HumanTask)
    .where(sa.or_(
        HumanTask.id == sa.bindparam("task_id"),
        sa.and_(
            HumanTask.company_id == sa.bindparam("company_id"), HumanTask.instance_id == sa.bindparam("instance_id"),
            HumanTask.status == "open",
        ),
    ))
    .execution_options(populate_existing=True)
)


# The lock also loads the instance's waiting timers and its company's timing_stamp, which
# the step's save reads (app.processes.timers.sync_timers and timer_setting), and the
# company's rights_stamp and tariff_stamp, which let the lane check and a re-rating use the
# roles and tariffs this process kept (RIGHTS_STAMP, app.tariffs.rates).
_LOCK_INSTANCE_OF_TASK = RowLock(
    ProcessInstance, ProcessInstance.id == sa.select(HumanTask.instance_id).where(HumanTask.id == sa.bindparam("task_id")).scalar_subquery(),
    options=(
        joinedload(ProcessInstance.waiting_timers),
        with_expression(
            ProcessInstance.timing_stamp,
            sa.select(Company.timing_stamp).where(Company.id == ProcessInstance.company_id).scalar_subquery(),
        ),
        with_expression(ProcessInstance.tariff_stamp, TARIFF_STAMP.of(ProcessInstance.company_id)),
        with_expression(ProcessInstance.rights_stamp, RIGHTS_STAMP.of(ProcessInstance.company_id)),
    ),
)


def _roles_and_functions(user_id, company_id):
    """Read the user's roles and the company's granted functions in one round trip; returns (RoleRights tuple, function set).

    The same test as has_permission needs both, and every task action checks the lanes,
    so the two reads share one UNION ALL statement. Both run without the tenant scope,
    like user_permissions and granted_functions. When the step's row lock read the
    company's rights_stamp, the copy this process kept under it serves without a query.
    It is kept only when every role belongs to `company_id`, because a write of a role
    renews the stamp of the role's company.
    """
    key = (user_id, company_id)
    cached = RIGHTS_STAMP.get(company_id, key)
    if cached is not None:
        return cached
    with scoped(SYSTEM_SCOPE):
        rows = db.session.execute(_ROLES_AND_FUNCTIONS, {"user_id": user_id, "company_id": company_id}).all()
    roles = tuple(RoleRights(row.code, row.company_id, frozenset(row.permissions)) for row in rows if row.source == "role")
    functions = frozenset(row.code for row in rows if row.source == "function")
    stamp = next((row.code for row in rows if row.source == "stamp"), None)
    if all(role.company_id == company_id for role in roles):
        RIGHTS_STAMP.keep(key, stamp, (roles, functions))
    return roles, functions


def inbox_tasks(user):
    """Open tasks the user may act on, oldest first, as (task, account, company) rows."""
    statement = (
        sa.select(HumanTask, Account, Company)
        .join(ProcessInstance, ProcessInstance.id == HumanTask.instance_id)
        .join(Account, Account.id == ProcessInstance.account_id)
        .join(Company, Company.id == HumanTask.company_id)
        .where(HumanTask.status == "open")
        .order_by(HumanTask.created_at, HumanTask.id)
    )
    if user.company.is_headquarters:
        statement = statement.where(HumanTask.lane_role.in_(GROUP_LANES))
    else:
        lanes = user_lanes(user, user.company_id)
        if not lanes:
            return []
        statement = statement.where(HumanTask.company_id == user.company_id, HumanTask.lane_role.in_(lanes))
    rows = db.session.execute(statement).all()
    lanes_by_company = {}
    visible = []
    for task, account, company in rows:
        if task.company_id not in lanes_by_company:
            lanes_by_company[task.company_id] = user_lanes(user, task.company_id)
        if task.lane_role in lanes_by_company[task.company_id]:
            visible.append((task, account, company))
    return visible


def get_task(task_id, user, fresh=False):
    """Return the task if the user may act on it; `fresh` reads it again even when the session holds it.

    Raises NotFoundError outside the user's companies and AccessError outside their lanes.
    """
    statement = sa.select(HumanTask).where(HumanTask.id == task_id)
    if fresh:
        statement = statement.execution_options(populate_existing=True)
    task = db.session.scalar(statement)
    _check_task_access(task, task_id, user)
    return task


def _check_task_access(task, task_id, user):
    if task is None:
        raise NotFoundError(_("任务 %(id)s 不存在，或不属于您所在的公司。", id=task_id))
    if task.lane_role not in user_lanes(user, task.company_id):
        role = lane_name(task.lane_role, role_names(task.company_id))
        raise AccessError(_("任务「%(task)s」由角色「%(role)s」办理，您没有该角色或相应权限。", task=shown_step_name(task.title), role=role))


def locked_task(task_id, user):
    """Lock the task's instance row, then read the task and check the user's lane; returns (task, instance, open tasks).

    The task and the instance's open tasks are read in one statement after the lock, so
    their status is the one the lock holder left, and the open tasks stay as read until
    this transaction changes them. On NotFoundError or AccessError the transaction is
    rolled back, which releases the lock.
    """
    instance = _LOCK_INSTANCE_OF_TASK(task_id=task_id)
    if instance is not None:
        remember_timing_stamp(instance.company_id, instance.timing_stamp)
        TARIFF_STAMP.remember(instance.company_id, instance.tariff_stamp)
        RIGHTS_STAMP.remember(instance.company_id, instance.rights_stamp)
    try:
        if instance is None:
            task, open_tasks = get_task(task_id, user, fresh=True), []
        else:
            rows = db.session.scalars(
                _TASK_AND_OPEN_TASKS, {"task_id": task_id, "company_id": instance.company_id, "instance_id": instance.id}
            ).all()
            task = next((row for row in rows if row.id == task_id), None)
            _check_task_access(task, task_id, user)
            open_tasks = [row for row in rows if row.instance_id == instance.id and row.status == "open"]
    except (NotFoundError, AccessError):
        db.session.rollback()
        raise
    return task, instance, open_tasks


def get_instance(instance_id):
    """Return an instance visible to the current tenant scope, or raise NotFoundError."""
    instance = db.session.scalar(sa.select(ProcessInstance).where(ProcessInstance.id == instance_id))
    if instance is None:
        raise NotFoundError(_("流程 %(id)s 不存在，或不属于您所在的公司。", id=instance_id))
    return instance


def account_history(account_id):
    """Process instances of an account, newest first, each with its events in order."""
    instances = db.session.scalars(
        sa.select(ProcessInstance).where(ProcessInstance.account_id == account_id).order_by(ProcessInstance.id.desc())
    ).all()
    return [(instance, instance_events(instance.id)) for instance in instances]


def instance_events(instance_id):
    """Audit events of one instance in chain order."""
    return db.session.scalars(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance_id).order_by(ProcessEvent.seq)
    ).all()


def running_instance(account_id, process_type):
    """Return the account's running or suspended instance of a process type, or None."""
    return db.session.scalar(
        sa.select(ProcessInstance).where(
            ProcessInstance.account_id == account_id,
            ProcessInstance.process_type == process_type,
            ProcessInstance.status.in_(ACTIVE_STATUSES),
        )
    )

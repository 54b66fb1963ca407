"""Timer events: company durations, the stored due-timer rows and firing them exactly once.

Diagrams set every timer as `<timeDate>deadline('KEY')</timeDate>`. The sandboxed
script engine evaluates `deadline` with the instance's company, so one diagram serves
every company while the durations stay company data (TimerSetting, defaults below).

SpiffWorkflow 3.2.0 has no scheduler. After each run the armed timers are copied into
ProcessTimer rows; a Celery beat job (`processes.fire_due_timers`) looks for rows whose
due time has passed and fires each under the instance row lock. The row's status is
read again under that lock, so two beat ticks or two workers fire a timer once, and a
timer that came due while no worker ran fires on the first scan after the restart.

What firing means follows from the timer event's id prefix (TIMER_KINDS).
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy import event as orm_event
from sqlalchemy.orm import Session, object_session
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins.events.intermediate_event import BoundaryEvent
from SpiffWorkflow.exceptions import SpiffWorkflowException
from SpiffWorkflow.util.task import TaskState

from app.clock import LOCAL_TIME
from app.extensions import db
from app.i18n import M_, N_, Message
from app.locking import lock_row
from app.org.models import Company
from app.processes.calendar import DAYS_CACHE_KEY, add_working_days, remember_day_kinds
from app.processes.models import ACTIVE_STATUSES, CalendarDay, HumanTask, ProcessInstance, ProcessTimer, TimerSetting, utcnow
from app.processes.step_names import step_name_value
from app.tariffs.models import Season
from app.tenancy import company_scope, current_scope, scoped

logger = logging.getLogger(__name__)

UNITS = {"working_days": N_("个工作日"), "days": N_("天"), "hours": N_("小时")}


@dataclass(frozen=True)
class TimerKey:
    """One duration a diagram can refer to with deadline('KEY')."""

    label: str
    amount: int
    unit: str
    # True when the amount counts back from the next season's first day instead of forward from now.
    before_season: bool = False


# Demo defaults, a starting configuration rather than sourced figures; each company edits its own.
TIMER_KEYS = {
    "approval_reminder": TimerKey(N_("审批待办超时催办"), 1, "working_days"),
    "approval_escalation": TimerKey(N_("分公司审批超时转集团"), 3, "working_days"),
    "task_due": TimerKey(N_("其他待办办理期限"), 3, "working_days"),
    "suspension_deadline": TimerKey(N_("报停须在供暖季开始前审结（提前天数）"), 0, "days", before_season=True),
    "shutoff_waiting": TimerKey(N_("强停催缴通知后的等待期"), 15, "days"),
}
MAX_TIMER_AMOUNT = 366

# Timer event id prefix -> (kind, label of the audit event, a Chinese msgid).
TIMER_KINDS = {
    "remind_": ("remind", N_("超时催办")),
    "escalate_": ("escalate", N_("超时转集团审批")),
    "cancel_": ("cancel", N_("超过期限自动取消")),
    "wait_": ("wait", N_("等待期届满")),
}


def timer_kind(element_id):
    """Return the kind of a timer event from its id prefix; an unknown prefix counts as a plain wait."""
    for prefix, (kind, _label) in TIMER_KINDS.items():
        if element_id.startswith(prefix):
            return kind
    return "wait"


def _kind_label(kind):
    return next(label for k, label in TIMER_KINDS.values() if k == kind)


def timer_setting(company_id, key):
    """Return (amount, unit) of a company's timer key, falling back to the default."""
    if key not in TIMER_KEYS:
        raise KeyError(f"Unknown timer key {key!r}; known keys: {', '.join(TIMER_KEYS)}.")
    settings = db.session.info.get(SETTINGS_CACHE_KEY, {}).get(company_id)
    if settings is None:
        settings = _kept_timing(company_id)
    if settings is None:
        settings = _read_timing(company_id)
    return settings.get(key) or (TIMER_KEYS[key].amount, TIMER_KEYS[key].unit)


# Session.info key: {company id: {timer key: (amount, unit)}} of the rows read in this transaction.
SETTINGS_CACHE_KEY = "heatflow.timer_settings"
# Session.info key: {company id: Company.timing_stamp read in this transaction}.
STAMP_KEY = "heatflow.timing_stamps"
# Company id -> (timing_stamp, first day, last day, settings, {day: kind}) of the last
# read in this process. Entries are replaced whole, never changed, and there is one per company.
_PROCESS_TIMING = {}
# Days of the working calendar read together with the timer settings, counted from tomorrow.
# They cover a count of up to 19 working days, the window add_working_days reads for it.
CALENDAR_DAYS_READ_WITH_SETTINGS = 60


# Built once, because building and hashing it on every step was a measurable part of its CPU time.
_TIMING = sa.union_all(
    sa.select(
        sa.literal("setting").label("source"), TimerSetting.timer_key.label("name"), TimerSetting.amount.label("amount"),
        TimerSetting.unit.label("unit"), sa.cast(sa.null(), CalendarDay.day.type).label("day"),
    ).where(TimerSetting.company_id == sa.bindparam("company_id")),
    sa.select(
        sa.literal("day"), CalendarDay.kind, sa.cast(sa.null(), TimerSetting.amount.type), sa.cast(sa.null(), TimerSetting.unit.type),
        CalendarDay.day,
    ).where(
        CalendarDay.company_id == sa.bindparam("company_id"), CalendarDay.day >= sa.bindparam("first", type_=sa.Date),
        CalendarDay.day <= sa.bindparam("last", type_=sa.Date),
    ),
)


def _local_tomorrow():
    return datetime.now(timezone.utc).astimezone(LOCAL_TIME).date() + timedelta(days=1)


def _read_timing(company_id):
    """Read all of a company's timer settings and its calendar rows of the coming days in one statement.

    Returns {timer key: (amount, unit)} of the stored rows. Both are kept for the rest of the
    transaction when the tenant scope can see the company, because a step that creates a
    task or arms a timer needs the settings and then the calendar. Adding, changing or
    bulk-writing either kind of row drops what is kept. NOTE: a row passed to
    Session.delete() is still seen until the next flush.

    When this transaction read the company's timing_stamp (remember_timing_stamp), the
    rows are also kept for later transactions of this process under that stamp.
    """
    first = _local_tomorrow()
    last = first + timedelta(days=CALENDAR_DAYS_READ_WITH_SETTINGS)
    stamp = db.session.info.get(STAMP_KEY, {}).get(company_id)
    rows = db.session.execute(_TIMING, {"company_id": company_id, "first": first, "last": last}).all()
    settings = {row.name: (row.amount, row.unit) for row in rows if row.source == "setting"}
    if current_scope().can_see(company_id):
        kinds = {row.day: row.name for row in rows if row.source == "day"}
        db.session.info.setdefault(SETTINGS_CACHE_KEY, {})[company_id] = settings
        remember_day_kinds(company_id, first, last, kinds)
        if stamp and db.session.info.get(STAMP_KEY, {}).get(company_id) == stamp:
            _PROCESS_TIMING[company_id] = (stamp, first, last, settings, kinds)
    return settings


def remember_timing_stamp(company_id, stamp):
    """Note the company's timing_stamp as read in this transaction, which lets timer_setting use the rows this process kept.

    The stamp may be one that this transaction's own flushed writes set. The rows read under
    it are then this transaction's too, and a rollback leaves the stamp unused forever.
    """
    if not stamp:
        return
    db.session.info.setdefault(STAMP_KEY, {})[company_id] = stamp


def _kept_timing(company_id):
    """Return the settings this process kept for the company's timing_stamp read in this transaction, or None.

    The kept settings and calendar rows become this transaction's, as if _read_timing had read them.
    """
    stamp = db.session.info.get(STAMP_KEY, {}).get(company_id)
    kept = _PROCESS_TIMING.get(company_id)
    if stamp is None or kept is None or kept[0] != stamp:
        return None
    _stamp, first, last, settings, kinds = kept
    if first != _local_tomorrow() or not current_scope().can_see(company_id):
        return None
    db.session.info.setdefault(SETTINGS_CACHE_KEY, {})[company_id] = settings
    remember_day_kinds(company_id, first, last, kinds)
    return settings


def _forget_timing(session):
    session.info.pop(SETTINGS_CACHE_KEY, None)
    session.info.pop(DAYS_CACHE_KEY, None)
    session.info.pop(STAMP_KEY, None)


@orm_event.listens_for(Session, "after_transaction_end")
def _forget_timing_after_transaction(session, transaction):
    # Any end of a transaction counts (commit, rollback, close, and a savepoint's release or
    # rollback), so nothing read inside a rolled-back savepoint outlives it. The inner
    # transaction of each flush does not count: a failed flush ends the outer one too.
    if transaction.parent is None or transaction.nested:
        _forget_timing(session)


@orm_event.listens_for(Session, "transient_to_pending")
def _forget_timing_on_add(session, instance):
    if isinstance(instance, (TimerSetting, CalendarDay)):
        _forget_timing(session)


def _forget_timing_on_change(target, value, oldvalue, initiator):
    session = object_session(target)
    if session is not None:
        _forget_timing(session)


for _attribute in (TimerSetting.timer_key, TimerSetting.amount, TimerSetting.unit, CalendarDay.day, CalendarDay.kind):
    orm_event.listen(_attribute, "set", _forget_timing_on_change)


_COMPANY = Company.__table__


@orm_event.listens_for(Session, "before_flush")
def _renew_timing_stamps(session, flush_context, instances):
    """Give a new timing_stamp to every company whose timer settings or calendar rows this flush writes.

    The UPDATE goes out in the flush's transaction, so the new stamp commits together with
    the rows and every process reads the rows again on its next step.
    """
    company_ids = {
        row.company_id for rows in (session.new, session.dirty, session.deleted) for row in rows
        if isinstance(row, (TimerSetting, CalendarDay))
    }
    if not company_ids:
        return
    _forget_timing(session)
    session.connection().execute(
        _COMPANY.update().where(_COMPANY.c.id.in_(sorted(company_ids))).values(timing_stamp=uuid.uuid4().hex)
    )


@orm_event.listens_for(Session, "after_flush")
def _forget_timing_after_delete(session, flush_context):
    if any(isinstance(row, (TimerSetting, CalendarDay)) for row in session.deleted):
        _forget_timing(session)


@orm_event.listens_for(Session, "do_orm_execute")
def _forget_timing_on_bulk_write(execute_state):
    if execute_state.is_select:
        return
    if any(mapper.class_ in (TimerSetting, CalendarDay) for mapper in execute_state.all_mappers):
        _forget_timing(execute_state.session)
        # The statement may touch any company's rows, so every company's copies are dropped.
        execute_state.session.connection().execute(_COMPANY.update().values(timing_stamp=uuid.uuid4().hex))


def next_season_start(company_id, today):
    """First day of the company's next heating season after `today`.

    A stored season that starts later is used. Without one, the latest season's start day
    and month are carried to the first year in which they fall after `today`.
    """
    upcoming = db.session.scalar(
        sa.select(Season.start_on).where(Season.company_id == company_id, Season.start_on > today).order_by(Season.start_on).limit(1)
    )
    if upcoming is not None:
        return upcoming
    latest = db.session.scalar(sa.select(Season.start_on).where(Season.company_id == company_id).order_by(Season.start_on.desc()).limit(1))
    if latest is None:
        raise LookupError("本公司尚未建立供暖季，无法计算报停截止时间；请先在收费标准中添加供暖季。")
    year = today.year
    while date(year, latest.month, latest.day) <= today:
        year += 1
    return date(year, latest.month, latest.day)


def deadline(company_id, key, now=None):
    """Return the due time of timer `key` for a company as an ISO UTC string, counted from `now`."""
    now = now or datetime.now(timezone.utc)
    amount, unit = timer_setting(company_id, key)
    if TIMER_KEYS[key].before_season:
        start = next_season_start(company_id, now.astimezone(LOCAL_TIME).date())
        due_day = start - timedelta(days=amount)
        due = datetime.combine(due_day, time(0, 0), LOCAL_TIME).astimezone(timezone.utc)
        # NOTE: a request filed less than `amount` days before the season gets the season's first day.
        if due <= now:
            due = datetime.combine(start, time(0, 0), LOCAL_TIME).astimezone(timezone.utc)
    elif unit == "working_days":
        due = add_working_days(company_id, now, amount)
    elif unit == "hours":
        due = now + timedelta(hours=amount)
    else:
        due = now + timedelta(days=amount)
    return due.isoformat()


def _is_timer(spiff_task):
    return isinstance(getattr(spiff_task.task_spec, "event_definition", None), TimerEventDefinition)


def armed_timers(workflow):
    """WAITING timer event tasks of a workflow with their due time, as {task id text: (task, due datetime)}."""
    armed = {}
    for spiff_task in workflow.get_tasks(state=TaskState.WAITING):
        if not _is_timer(spiff_task):
            continue
        value = spiff_task._get_internal_data("event_value")
        if value is None:
            continue
        armed[str(spiff_task.id)] = (spiff_task, TimerEventDefinition.get_datetime(value))
    return armed


def _attached_to(spiff_task):
    """BPMN id of the task a boundary event is attached to: its sibling under the boundary split; '' otherwise."""
    if not isinstance(spiff_task.task_spec, BoundaryEvent) or spiff_task.parent is None:
        return ""
    for sibling in spiff_task.parent.children:
        if not isinstance(sibling.task_spec, BoundaryEvent):
            return sibling.task_spec.bpmn_id or ""
    return ""


def sync_timers(instance, workflow, record_event, armed=None):
    """Store newly armed timers and mark vanished ones fired or cancelled; returns the fired rows.

    `record_event` is app.processes.audit.record_event, passed in to keep imports one-way.
    `armed` is armed_timers(workflow) when the caller has it. The caller holds the
    instance row lock.
    """
    if armed is None:
        armed = armed_timers(workflow)
    if "waiting_timers" in sa.inspect(instance).dict:
        # The row lock loaded them (app.processes.access.locked_task). Rows changed since keep
        # their status in the session, so only those still waiting count.
        waiting = [row for row in instance.waiting_timers if row.status == "waiting"]
        db.session.expire(instance, ["waiting_timers"])
    else:
        waiting = db.session.scalars(
            sa.select(ProcessTimer).where(ProcessTimer.instance_id == instance.id, ProcessTimer.status == "waiting")
        ).all()
    known = {row.spiff_task_id for row in waiting}
    fired = []
    for row in waiting:
        if row.spiff_task_id in armed:
            continue
        spiff_task = workflow.get_task_from_id(UUID(row.spiff_task_id))
        if spiff_task is not None and spiff_task.has_state(TaskState.COMPLETED):
            row.status = "fired"
            row.fired_at = utcnow()
            fired.append(row)
            _record_fired(instance, row, record_event)
        else:
            row.status = "cancelled"
    for spiff_id, (spiff_task, due) in armed.items():
        if spiff_id in known:
            continue
        element = spiff_task.task_spec.bpmn_id or spiff_task.task_spec.name
        db.session.add(ProcessTimer(
            company_id=instance.company_id, instance_id=instance.id, spiff_task_id=spiff_id, element_id=element,
            kind=timer_kind(element), attached_to=_attached_to(spiff_task), due_at=due, status="waiting",
        ))
    return fired


def _record_fired(instance, row, record_event):
    label = _kind_label(row.kind)
    if row.kind == "remind":
        tasks = db.session.scalars(
            sa.select(HumanTask).where(
                HumanTask.instance_id == instance.id, HumanTask.status == "open", HumanTask.task_spec_name == row.attached_to
            )
        ).all()
        for task in tasks:
            task.reminded_at = utcnow()
        titles = [task.title for task in tasks] or [row.attached_to]
        names = "、".join(titles)
        # Titles of the default diagrams are translated with the sentence; a company's own stay as written.
        message = M_("%(label)s：待办「%(names)s」已超过办理期限，请尽快办理。", label=Message(label),
                     names=[step_name_value(title) for title in titles])
        record_event(instance, "reminded", task_name=names, comment=f"{label}：待办「{names}」已超过办理期限，请尽快办理。",
                     data={"element": row.element_id, "due_at": row.due_at.isoformat(), "message": message.as_data()})
        return
    event_type = {"escalate": "escalated", "cancel": "cancelled"}.get(row.kind, "timer_fired")
    # task_name and comment keep the Chinese text for the audit hash and exports. Pages show
    # the stored msgids in the reader's language (ProcessEvent.shown_task_name, shown_comment).
    message = M_("定时事件 %(element)s 到期：%(label)s。", element=row.element_id, label=Message(label))
    record_event(instance, event_type, task_name=label, comment=f"定时事件 {row.element_id} 到期：{label}。",
                 data={"element": row.element_id, "due_at": row.due_at.isoformat(),
                       "task_name": Message(label).as_data(), "message": message.as_data()})


def cancel_waiting_timers(instance_id):
    """Mark an ended instance's waiting timers cancelled; returns how many. The caller holds the instance row lock."""
    rows = db.session.scalars(
        sa.select(ProcessTimer).where(ProcessTimer.instance_id == instance_id, ProcessTimer.status == "waiting")
    ).all()
    for row in rows:
        row.status = "cancelled"
    return len(rows)


def task_due_at(instance, workflow, spiff_task, armed=None):
    """Due time of a new inbox task: its earliest interrupting boundary timer, else the company's task_due setting.

    `armed` is armed_timers(workflow) when the caller has it.
    """
    element = spiff_task.task_spec.bpmn_id
    if armed is None:
        armed = armed_timers(workflow)
    dues = [
        due for timer_task, due in armed.values()
        if _attached_to(timer_task) == element and getattr(timer_task.task_spec, "cancel_activity", True)
        and timer_kind(timer_task.task_spec.bpmn_id or "") != "remind"
    ]
    if dues:
        return min(dues)
    return datetime.fromisoformat(deadline(instance.company_id, "task_due"))


def due_timer_ids(now=None, limit=500):
    """Ids of waiting timers due at `now`, oldest first, at most `limit`."""
    now = now or datetime.now(timezone.utc)
    return list(db.session.scalars(
        sa.select(ProcessTimer.id)
        .where(ProcessTimer.status == "waiting", ProcessTimer.due_at <= now)
        .order_by(ProcessTimer.due_at, ProcessTimer.id)
        .limit(limit)
    ))


def fire_timer(timer_id, now=None):
    """Fire one due timer under its instance's row lock; returns True when this call fired it.

    Returns False when the timer is not due yet, already fired or cancelled, or when its
    instance is not running (a suspended instance fires its due timers on the first scan
    after it is resumed). An engine failure puts the instance in status error, like a
    failed task completion.
    """
    from app.processes.services import fire_timer_in_instance

    now = now or datetime.now(timezone.utc)
    row = db.session.get(ProcessTimer, timer_id)
    if row is None:
        return False
    with scoped(company_scope(row.company_id, label=f"timer:{timer_id}")):
        instance = lock_row(ProcessInstance, row.instance_id)
        db.session.refresh(row)
        due = row.due_at if row.due_at.tzinfo else row.due_at.replace(tzinfo=timezone.utc)
        if row.status == "waiting" and instance.status not in ACTIVE_STATUSES:
            # The instance ended (cancelled, terminated, rejected) while the timer waited.
            cancel_waiting_timers(instance.id)
            db.session.commit()
            return False
        if row.status != "waiting" or due > now or instance.status != "running":
            db.session.rollback()
            return False
        try:
            fired = fire_timer_in_instance(instance, row)
        except SpiffWorkflowException:
            logger.exception("Timer %s of instance %s failed", timer_id, instance.id)
            return False
        return fired


def fire_due_timers(now=None, limit=500):
    """Fire every timer due at `now`; returns how many fired. Safe to run from several workers at once."""
    count = 0
    for timer_id in due_timer_ids(now, limit):
        if fire_timer(timer_id, now):
            count += 1
    return count

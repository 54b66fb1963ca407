"""Timer events: company durations, reminders, SLA escalation, auto-cancel and exactly-once firing."""

import html
import threading
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from app.clock import LOCAL_TIME
from app.extensions import db
from app.network.models import Account
from app.payments.services import collect_payment
from app.processes.admin import resume_instance, suspend_instance
from app.processes.calendar import add_working_days
from app.processes.models import CalendarDay, HumanTask, ProcessEvent, ProcessInstance, ProcessTimer, TimerSetting
from app.processes.timers import deadline, fire_due_timers, fire_timer, timer_setting
from app.tenancy import SYSTEM_SCOPE, set_scope
from tests.processes.conftest import fire_timer_of, instance_of, open_task, start_process_request, start_request, submit_task, user

UTC = timezone.utc
NOTICE = {"notice_no": "TJ-CJ-2026-008", "served_on": "2026-01-05", "comment": "本人签收"}


def _timers(instance_id):
    rows = db.session.scalars(sa.select(ProcessTimer).where(ProcessTimer.instance_id == instance_id)).all()
    return {row.element_id: row for row in rows}


def _events(instance_id, event_type):
    return db.session.scalars(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance_id, ProcessEvent.event_type == event_type)
    ).all()


def _aware(moment):
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _suspension(login, make_account, code="TJ", area="87.35"):
    account = make_account(code, area)
    clerk = login(f"{code.lower()}_clerk")
    assert start_request(clerk, account.id).status_code == 302
    return instance_of(account.id, "suspension")


def test_working_days_skip_weekend(demo):
    tj = demo["TJ"].id
    # Friday 2026-12-04 10:00 in Beijing (02:00 UTC) + 3 working days = Wednesday 2026-12-09 10:00 Beijing.
    friday = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
    assert add_working_days(tj, friday, 3) == datetime(2026, 12, 9, 2, 0, tzinfo=UTC)
    # Saturday + 1 working day = Monday.
    saturday = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
    assert add_working_days(tj, saturday, 1) == datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def test_suspension_deadline_is_next_season(demo):
    # TJ's stored season starts 2025-11-15; after 2026-12-04 the next start is 2027-11-15, 00:00 Beijing = 16:00 UTC the day before.
    now = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
    assert deadline(demo["TJ"].id, "suspension_deadline", now) == "2027-11-14T16:00:00+00:00"
    db.session.add(TimerSetting(company_id=demo["TJ"].id, timer_key="suspension_deadline", amount=10, unit="days"))
    db.session.commit()
    assert deadline(demo["TJ"].id, "suspension_deadline", now) == "2027-11-04T16:00:00+00:00"
    # QD keeps the default of 0 days before its own season start 2025-11-16 -> 2027-11-16.
    assert deadline(demo["QD"].id, "suspension_deadline", now) == "2027-11-15T16:00:00+00:00"


def test_start_arms_company_timers(demo, make_account, login):
    db.session.add(TimerSetting(company_id=demo["TJ"].id, timer_key="approval_escalation", amount=1, unit="hours"))
    db.session.commit()
    before = datetime.now(UTC)
    instance = _suspension(login, make_account)
    after = datetime.now(UTC)
    timers = _timers(instance.id)
    assert set(timers) == {"remind_company_approval", "escalate_company_approval", "cancel_company_approval_deadline"}
    assert {row.kind for row in timers.values()} == {"remind", "escalate", "cancel"}
    escalation_due = _aware(timers["escalate_company_approval"].due_at)
    assert before + timedelta(hours=1) <= escalation_due <= after + timedelta(hours=1)
    # The inbox task is due when the interrupting escalation timer fires.
    task = open_task(instance.id, "company_approval")
    assert _aware(task.due_at) == escalation_due
    assert task.process_type == "suspension"
    assert task.account_id == instance.account_id
    # QD keeps the default reminder of one working day.
    other = _suspension(login, make_account, code="QD")
    reminder_due = _aware(_timers(other.id)["remind_company_approval"].due_at)
    assert reminder_due >= add_working_days(demo["QD"].id, before, 1) - timedelta(seconds=1)


def test_fired_timer_names_follow_language(demo, make_account, login):
    instance = _suspension(login, make_account)
    fire_timer_of(instance.id, "remind_company_approval")
    fire_timer_of(instance.id, "escalate_company_approval")
    [escalated] = _events(instance.id, "escalated")
    # The stored texts stay Chinese for the audit hash and exports.
    assert escalated.task_name == "超时转集团审批"
    assert escalated.comment == "定时事件 escalate_company_approval 到期：超时转集团审批。"
    assert escalated.data["task_name"] == {"msgid": "超时转集团审批", "params": {}}
    admin = login("tj_admin")

    chinese = html.unescape(admin.get(f"/processes/instances/{instance.id}").get_data(as_text=True))
    assert '<td data-label="环节">超时转集团审批</td>' in chinese
    assert "定时事件 escalate_company_approval 到期：超时转集团审批。" in chinese
    assert "超时催办：待办「分公司审批」已超过办理期限，请尽快办理。" in chinese

    assert admin.post("/language", data={"locale": "en"}).status_code == 302
    english = html.unescape(admin.get(f"/processes/instances/{instance.id}").get_data(as_text=True))
    assert '<td data-label="Step">Escalated to group approval after the deadline</td>' in english
    assert "Timer event escalate_company_approval is due: Escalated to group approval after the deadline." in english
    assert "Overdue reminder: the task “Company approval” is past its due date. Please handle it soon." in english
    assert "超时转集团审批" not in english
    assert "已超过办理期限" not in english


def test_escalation_timer_moves_task_to_group(demo, make_account, login):
    instance = _suspension(login, make_account)
    company_task = open_task(instance.id, "company_approval")
    fired = fire_timer_of(instance.id, "escalate_company_approval")
    assert fired.status == "fired"
    db.session.refresh(company_task)
    assert company_task.status == "cancelled"
    group_task = open_task(instance.id, "group_approval")
    assert group_task is not None
    assert group_task.lane_role == "group_approver"
    assert len(_events(instance.id, "escalated")) == 1
    timers = _timers(instance.id)
    # Leaving the company task cancels its other boundary timers and arms those of the group task.
    assert timers["remind_company_approval"].status == "cancelled"
    assert timers["cancel_company_approval_deadline"].status == "cancelled"
    assert timers["remind_group_approval"].status == "waiting"
    assert timers["cancel_group_approval_deadline"].status == "waiting"
    # The group approver finishes the request: 87.35 m² suspended in TJ.
    hq = login("hq_approver")
    response = submit_task(hq, group_task.id, {"decision": "approve", "comment": "超时转集团，同意"})
    assert response.status_code == 302
    db.session.expire_all()
    assert open_task(instance.id, "valve_close") is not None
    assert _timers(instance.id)["remind_group_approval"].status == "cancelled"


def test_reminder_keeps_task_open(demo, make_account, login):
    instance = _suspension(login, make_account)
    fired = fire_timer_of(instance.id, "remind_company_approval")
    assert fired.status == "fired"
    task = open_task(instance.id, "company_approval")
    assert task is not None
    assert task.reminded_at is not None
    reminders = _events(instance.id, "reminded")
    assert len(reminders) == 1
    assert "分公司审批" in reminders[0].task_name
    assert _timers(instance.id)["escalate_company_approval"].status == "waiting"
    assert db.session.get(ProcessInstance, instance.id).status == "running"


def test_deadline_cancels_suspension(demo, make_account, login):
    instance = _suspension(login, make_account)
    fired = fire_timer_of(instance.id, "cancel_company_approval_deadline")
    assert fired.status == "fired"
    db.session.expire_all()
    assert db.session.get(ProcessInstance, instance.id).status == "cancelled"
    assert open_task(instance.id, "company_approval") is None
    assert {row.status for name, row in _timers(instance.id).items() if name != "cancel_company_approval_deadline"} == {"cancelled"}
    account = db.session.get(Account, instance.account_id)
    assert account.billing_status == "normal"


def test_timer_not_due_does_not_fire(demo, make_account, login):
    instance = _suspension(login, make_account)
    timer = _timers(instance.id)["escalate_company_approval"]
    assert fire_timer(timer.id, now=_aware(timer.due_at) - timedelta(seconds=1)) is False
    assert fire_due_timers(now=datetime.now(UTC)) == 0
    db.session.expire_all()
    assert _timers(instance.id)["escalate_company_approval"].status == "waiting"


def test_timer_fires_once(demo, make_account, login):
    instance = _suspension(login, make_account)
    timer = _timers(instance.id)["escalate_company_approval"]
    late = _aware(timer.due_at) + timedelta(minutes=5)
    assert fire_timer(timer.id, now=late) is True
    assert fire_timer(timer.id, now=late) is False
    db.session.expire_all()
    assert len(_events(instance.id, "escalated")) == 1
    group_tasks = db.session.scalars(
        sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.task_spec_name == "group_approval")
    ).all()
    assert len(group_tasks) == 1


def test_concurrent_scans_fire_once(app, demo, make_account, login):
    instance = _suspension(login, make_account)
    timer = _timers(instance.id)["escalate_company_approval"]
    late = _aware(timer.due_at) + timedelta(minutes=5)
    results = []
    barrier = threading.Barrier(2)

    def scan():
        with app.app_context():
            set_scope(SYSTEM_SCOPE)
            barrier.wait(timeout=10)
            try:
                results.append(fire_timer(timer.id, now=late))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=scan) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == [False, True]
    db.session.expire_all()
    assert len(_events(instance.id, "escalated")) == 1


def test_suspended_instance_fires_after_resume(demo, make_account, login):
    instance = _suspension(login, make_account)
    timer = _timers(instance.id)["escalate_company_approval"]
    late = _aware(timer.due_at) + timedelta(minutes=5)
    admin = user("tj_admin")
    suspend_instance(instance.id, admin, "核实材料")
    assert fire_due_timers(now=late) == 0
    resume_instance(instance.id, admin, "材料已核实")
    # The escalation and the earlier reminder were both due during the suspension.
    assert fire_due_timers(now=late) == 2
    db.session.expire_all()
    assert open_task(instance.id, "group_approval") is not None


def test_shutoff_cancelled_when_paid_during_wait(demo, make_account, login):
    # TJ 87.35 m² × 25.00 = 2183.75 owed; paid in full while the notice's waiting period runs.
    account = make_account("TJ", "87.35")
    clerk = login("tj_clerk")
    start_process_request(clerk, "forced_shutoff", account.id, {"comment": "多次催缴未缴"})
    instance = instance_of(account.id, "forced_shutoff")
    assert submit_task(clerk, open_task(instance.id, "notice").id, NOTICE).status_code == 302
    timer = _timers(instance.id)["wait_after_notice"]
    assert timer.kind == "wait"
    # The default waiting period is 15 calendar days.
    assert timedelta(days=15) - timedelta(minutes=1) <= _aware(timer.due_at) - _aware(timer.created_at) <= timedelta(days=15, minutes=1)
    collect_payment(db.session.get(Account, account.id), "2183.75", "cash", user("tj_cashier"))
    late = _aware(timer.due_at) + timedelta(seconds=1)
    fire_due_timers(now=late)
    db.session.expire_all()
    assert db.session.get(ProcessInstance, instance.id).status == "cancelled"
    assert _timers(instance.id)["wait_after_notice"].status == "cancelled"
    assert open_task(instance.id, "company_approval") is None
    assert db.session.get(Account, account.id).billing_status == "normal"


def test_shutoff_wait_then_approval(demo, make_account, login):
    account = make_account("TJ", "87.35")
    clerk = login("tj_clerk")
    start_process_request(clerk, "forced_shutoff", account.id, {"comment": "多次催缴未缴"})
    instance = instance_of(account.id, "forced_shutoff")
    assert submit_task(clerk, open_task(instance.id, "notice").id, NOTICE).status_code == 302
    assert open_task(instance.id, "company_approval") is None
    assert fire_timer_of(instance.id, "wait_after_notice").status == "fired"
    assert open_task(instance.id, "company_approval") is not None
    assert len(_events(instance.id, "timer_fired")) == 1


def test_settings_page_saves_durations(demo, login):
    admin = login("tj_admin")
    page = admin.get("/processes/settings")
    assert "分公司审批超时转集团" in page.get_data(as_text=True)
    form = {
        "section": "timers", "approval_reminder_amount": "2", "approval_reminder_unit": "working_days",
        "approval_escalation_amount": "5", "approval_escalation_unit": "working_days",
        "task_due_amount": "48", "task_due_unit": "hours", "suspension_deadline_amount": "7",
        "shutoff_waiting_amount": "10", "shutoff_waiting_unit": "days",
    }
    assert admin.post("/processes/settings", data=form).status_code == 303
    rows = {row.timer_key: (row.amount, row.unit) for row in db.session.scalars(sa.select(TimerSetting)).all()}
    assert rows["approval_escalation"] == (5, "working_days")
    assert rows["task_due"] == (48, "hours")
    assert rows["suspension_deadline"] == (7, "days")
    # Friday 2026-12-04 10:00 Beijing + 5 working days = Friday 2026-12-11 10:00 Beijing.
    now = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
    assert deadline(demo["TJ"].id, "approval_escalation", now) == "2026-12-11T02:00:00+00:00"
    assert deadline(demo["QD"].id, "approval_escalation", now) == "2026-12-09T02:00:00+00:00"
    bad = admin.post("/processes/settings", data={**form, "approval_escalation_amount": "abc"})
    assert bad.status_code == 400
    assert "分公司审批超时转集团「abc」无效" in bad.get_data(as_text=True)
    zero = admin.post("/processes/settings", data={**form, "approval_reminder_amount": "0"})
    assert zero.status_code == 400
    db.session.expire_all()
    assert db.session.scalar(sa.select(TimerSetting).filter_by(timer_key="approval_escalation")).amount == 5


def _statements_during(function):
    """Call `function` and return (its result, the SQL statements it sent)."""
    sent = []

    def record(connection, cursor, statement, *args):
        sent.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", record)
    try:
        return function(), sent
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record)


def test_timer_settings_read_once_per_transaction(demo):
    tj = demo["TJ"].id
    first, sent = _statements_during(lambda: timer_setting(tj, "task_due"))
    assert len(sent) == 1
    again, sent = _statements_during(lambda: (timer_setting(tj, "task_due"), deadline(tj, "task_due")))
    assert again[0] == first
    assert sent == []


def test_timer_setting_changes_seen_before_commit(demo):
    tj = demo["TJ"].id
    before = timer_setting(tj, "approval_reminder")
    row = db.session.scalar(sa.select(TimerSetting).filter_by(company_id=tj, timer_key="approval_reminder"))
    if row is None:
        row = TimerSetting(company_id=tj, timer_key="approval_reminder", amount=5, unit="days")
        db.session.add(row)
    else:
        row.amount, row.unit = 5, "days"
    assert timer_setting(tj, "approval_reminder") == (5, "days")
    row.amount = 7
    assert timer_setting(tj, "approval_reminder") == (7, "days")
    db.session.execute(sa.update(TimerSetting).where(TimerSetting.id == row.id).values(amount=9))
    assert timer_setting(tj, "approval_reminder") == (9, "days")
    db.session.rollback()
    assert timer_setting(tj, "approval_reminder") == before


def test_calendar_change_moves_due_before_commit(demo):
    tj = demo["TJ"].id
    now = datetime.now(UTC)
    due = datetime.fromisoformat(deadline(tj, "task_due", now))
    due_day = due.astimezone(LOCAL_TIME).date()
    row = db.session.scalar(sa.select(CalendarDay).filter_by(company_id=tj, day=due_day))
    if row is None:
        db.session.add(CalendarDay(company_id=tj, day=due_day, kind="holiday", name="测试假日"))
    else:
        row.kind = "holiday"
    later = datetime.fromisoformat(deadline(tj, "task_due", now))
    assert later > due
    assert later.astimezone(LOCAL_TIME).date() != due_day
    db.session.rollback()
    assert datetime.fromisoformat(deadline(tj, "task_due", now)) == due

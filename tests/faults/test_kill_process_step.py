"""SIGKILL during a process step: the approval whose service task re-rates the account (web
process), and an escalation timer fired by a Celery worker. Afterwards the instance is
before the step, never halfway, and the step runs exactly once when retried."""

import threading
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa
from celery import Celery

from app.billing.models import LedgerEntry
from app.billing.services import season_receivable
from app.extensions import db
from app.network.models import Account
from app.processes.audit import verify_chain
from app.processes.models import HumanTask, ProcessEvent, ProcessInstance, ProcessTimer
from app.tariffs.services import get_season
from tests.faults.conftest import (
    Browser,
    backends_of,
    free_port,
    wait_until,
    waiting_on_lock,
)
from tests.processes.conftest import instance_of, make_account, open_task, start_request  # noqa: F401

pytestmark = pytest.mark.faults


def _rerates(account_id):
    return db.session.scalars(sa.select(LedgerEntry).filter_by(account_id=account_id, kind="rerate")).all()


def _events(instance_id):
    return [e.event_type for e in db.session.scalars(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance_id).order_by(ProcessEvent.seq)
    )]


def test_killed_approval_step_rolls_back(demo, make_account, login, processes, blocker):  # noqa: F811
    # TJ residential 87.35 m² × 25.00 = 2183.75; approved as 报停 at 0.20 it becomes 436.75.
    account = make_account("TJ", "87.35")
    season = get_season(demo["TJ"].id, "2025-2026")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    task = open_task(instance.id, "company_approval")
    assert login("tj_approver").post(f"/processes/tasks/{task.id}/claim").status_code == 303
    events_before = _events(instance.id)
    state_before = instance.state
    task_id, account_id = task.id, account.id
    db.session.commit()

    port = free_port()
    web = processes.web("fault_step_web", port)
    approver = Browser(f"http://127.0.0.1:{port}").login("tj_approver")
    # The re-rating service task locks the account row; holding it stops the step after the
    # engine ran the approval and before anything was committed.
    blocker.begin()
    blocker.execute(sa.select(Account.id).where(Account.id == account_id).with_for_update())
    answers = []
    submit = threading.Thread(target=lambda: answers.append(_quietly(approver.submit, task_id, {"decision": "approve", "comment": "同意"})))
    submit.start()
    wait_until(lambda: waiting_on_lock(blocker, "fault_step_web"))
    processes.kill(web)
    blocker.rollback()
    submit.join(timeout=30)
    # The approver's browser got no answer: the connection broke with the process.
    assert len(answers) == 1
    assert isinstance(answers[0], OSError)
    wait_until(lambda: backends_of(blocker, "fault_step_web") == 0)

    db.session.rollback()
    instance = db.session.get(ProcessInstance, instance.id)
    assert instance.status == "running"
    assert instance.state == state_before
    assert _events(instance.id) == events_before
    assert db.session.get(HumanTask, task.id).status == "open"
    assert db.session.get(Account, account.id).billing_status == "normal"
    assert _rerates(account.id) == []
    assert season_receivable(account.id, season.id) == Decimal("2183.75")

    processes.web("fault_step_web_restarted", port)
    approver = Browser(f"http://127.0.0.1:{port}").login("tj_approver")
    assert approver.submit(task.id, {"decision": "approve", "comment": "同意"}) == 302
    # A second submission of the same task is refused and posts nothing.
    assert approver.submit(task.id, {"decision": "approve", "comment": "同意"}) in (302, 409)

    db.session.rollback()
    assert [line.amount for line in _rerates(account.id)] == [Decimal("-1747.00")]
    assert season_receivable(account.id, season.id) == Decimal("436.75")
    assert db.session.get(Account, account.id).billing_status == "suspended"
    assert _events(instance.id).count("rebilled") == 1
    assert verify_chain(instance.id).ok


def _quietly(function, *args):
    try:
        return function(*args)
    except OSError as error:
        return error


@pytest.mark.slow
def test_killed_timer_worker_fires_once(demo, make_account, login, processes, blocker, rabbit_vhost):  # noqa: F811
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    timer = db.session.scalar(
        sa.select(ProcessTimer).where(ProcessTimer.instance_id == instance.id, ProcessTimer.element_id == "escalate_company_approval")
    )
    timer.due_at = datetime.now(timezone.utc) - timedelta(seconds=1)
    db.session.commit()
    timer_id, events_before = timer.id, _events(instance.id)

    # Escalation writes inbox rows; a SHARE lock on their table stops the worker after the
    # engine moved the workflow and before the commit.
    blocker.begin()
    blocker.execute(sa.text("LOCK TABLE human_task IN SHARE MODE"))
    worker = processes.celery_worker("fault_timer_worker", rabbit_vhost)
    sender = Celery(broker=rabbit_vhost)
    try:
        sender.send_task("processes.fire_due_timers")
    finally:
        sender.close()
    wait_until(lambda: waiting_on_lock(blocker, "fault_timer_worker") or worker.poll() is not None)
    assert worker.poll() is None, processes.logs()
    processes.kill(worker)
    blocker.rollback()
    wait_until(lambda: backends_of(blocker, "fault_timer_worker") == 0)

    db.session.rollback()
    assert db.session.get(ProcessTimer, timer_id).status == "waiting"
    assert _events(instance.id) == events_before
    assert open_task(instance.id, "group_approval") is None
    assert open_task(instance.id, "company_approval") is not None

    # The unacknowledged scan goes back to the queue and runs on the restarted worker.
    restarted = processes.celery_worker("fault_timer_worker_2", rabbit_vhost)

    def fired():
        db.session.rollback()
        return db.session.get(ProcessTimer, timer_id).status == "fired"

    wait_until(fired)
    processes.stop(restarted)
    db.session.rollback()
    assert _events(instance.id).count("escalated") == 1
    group_tasks = db.session.scalars(
        sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.task_spec_name == "group_approval")
    ).all()
    assert len(group_tasks) == 1
    assert verify_chain(instance.id).ok

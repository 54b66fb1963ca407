"""A timer that comes due while no worker runs fires once when workers return (real Celery beat and workers on RabbitMQ)."""

import os
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.child_processes import stop_child
from app.extensions import db
from app.processes.models import HumanTask, ProcessEvent, ProcessTimer
from tests.core.test_celery_broker import _rabbitmqctl
from tests.processes.conftest import instance_of, start_request

ROOT = Path(__file__).resolve().parents[2]
WAIT_LIMIT_S = 90


@pytest.fixture
def rabbit_vhost():
    vhost = "heatflow_test_" + uuid.uuid4().hex[:8]
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)


def _celery(args, env, log_path):
    log = open(log_path, "w")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "app.celery_worker", *args, "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def _timer(timer_id):
    db.session.expire_all()
    return db.session.get(ProcessTimer, timer_id)


def test_timer_due_while_workers_down_fires_once(app, demo, make_account, login, rabbit_vhost, tmp_path):
    account = make_account("TJ", "87.35")
    assert start_request(login("tj_clerk"), account.id).status_code == 302
    instance = instance_of(account.id, "suspension")
    timer = db.session.scalar(
        sa.select(ProcessTimer).where(ProcessTimer.instance_id == instance.id, ProcessTimer.element_id == "escalate_company_approval")
    )
    # Bring the escalation due 3 seconds from now; the other timers stay days away.
    timer.due_at = datetime.now(timezone.utc) + timedelta(seconds=3)
    db.session.commit()

    env = {
        **os.environ,
        "DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
        "CELERY_BROKER_URL": rabbit_vhost,
        "HEATFLOW_TIMER_SCAN_SECONDS": "1",
    }
    beat = _celery(["beat", "--schedule", str(tmp_path / "beat-schedule")], env, tmp_path / "beat.log")
    workers = []
    try:
        # Beat queues a scan every second while no worker runs; let the timer come due and several scans pile up.
        time.sleep(8)
        assert _timer(timer.id).status == "waiting"
        workers = [
            _celery(["worker", "--pool", "solo", "--hostname", f"timer{n}@%h"], env, tmp_path / f"worker{n}.log") for n in (1, 2)
        ]
        deadline = time.monotonic() + WAIT_LIMIT_S
        while time.monotonic() < deadline and _timer(timer.id).status == "waiting":
            time.sleep(0.5)
        # Let both workers drain the queued scans before counting.
        time.sleep(4)
    finally:
        for process in [*workers, beat]:
            stop_child(process)

    logs = "\n".join(path.read_text() for path in tmp_path.glob("*.log"))
    assert _timer(timer.id).status == "fired", logs[-4000:]
    escalations = db.session.scalars(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance.id, ProcessEvent.event_type == "escalated")
    ).all()
    assert len(escalations) == 1
    group_tasks = db.session.scalars(
        sa.select(HumanTask).where(HumanTask.instance_id == instance.id, HumanTask.task_spec_name == "group_approval")
    ).all()
    assert len(group_tasks) == 1
    assert "processes.fire_due_timers" in logs

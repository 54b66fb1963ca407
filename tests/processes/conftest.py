"""Fixtures of the process tests: accounts billed for season 2025-2026 and task helpers."""

import itertools
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account, Building, Community, Unit
from app.org.models import User
from app.processes.models import HumanTask, ProcessInstance

SEASON = "2025-2026"


def _get_or_add(model, **keys):
    row = db.session.scalar(sa.select(model).filter_by(**keys))
    if row is None:
        row = model(**keys)
        db.session.add(row)
        db.session.flush()
    return row


@pytest.fixture
def make_account(demo):
    """Create an account in a demo company and post its 2025-2026 season charge."""
    rooms = itertools.count(101)

    def _make(code, area, user_type="residential", status="normal"):
        company = demo[code]
        community = _get_or_add(Community, company_id=company.id, code="0001", name="测试小区")
        building = _get_or_add(Building, company_id=company.id, community_id=community.id, code="001")
        unit = _get_or_add(Unit, company_id=company.id, building_id=building.id, code="01")
        room = f"{next(rooms):04d}"
        account = Account(
            company_id=company.id, account_no=f"{company.number}000100101{room}", customer_name="测试户",
            unit_id=unit.id, room=room, building_area=Decimal(area), user_type=user_type, billing_status=status,
        )
        db.session.add(account)
        db.session.commit()
        run_billing(code, SEASON)
        return account

    return _make


def second_tj_approver(demo):
    """Add tj_approver2, a second TJ company approver, and return the user."""
    from app.org.models import Role, UserRole
    from app.org.services import hash_password

    company = demo["TJ"]
    role = db.session.scalar(sa.select(Role).filter_by(company_id=company.id, code="company_approver"))
    second = User(
        company_id=company.id, username="tj_approver2", name="津南第二审批人", user_no="119901",
        password_hash=hash_password("heatflow-demo"),
    )
    db.session.add(second)
    db.session.flush()
    db.session.add(UserRole(company_id=company.id, user_id=second.id, role_id=role.id))
    db.session.commit()
    return second


def user(username):
    """Return the demo user with this login name."""
    return db.session.scalar(sa.select(User).filter_by(username=username))


def open_task(instance_id, spec_name):
    """Return the open inbox row of a task spec in an instance, or None."""
    return db.session.scalar(
        sa.select(HumanTask).where(
            HumanTask.instance_id == instance_id, HumanTask.task_spec_name == spec_name, HumanTask.status == "open"
        )
    )


def submit_task(client, task_id, data):
    """Claim a task and submit its form through the web routes; returns the submit response."""
    claimed = client.post(f"/processes/tasks/{task_id}/claim")
    assert claimed.status_code == 303, claimed.get_data(as_text=True)
    return client.post(f"/processes/tasks/{task_id}", data=data)


def start_request(client, account_id, reason="vacant", comment="房屋空置，冬季无人居住"):
    """File a 报停 request through the account page's form."""
    return client.post(f"/processes/suspension/start/{account_id}", data={"reason": reason, "comment": comment})


def start_process_request(client, process_type, account_id, data):
    """File a request of any process type through the account page's form."""
    return client.post(f"/processes/{process_type}/start/{account_id}", data=data)


def instance_of(account_id, process_type):
    """Return the newest instance of a process type for an account."""
    return db.session.scalar(
        sa.select(ProcessInstance)
        .where(ProcessInstance.account_id == account_id, ProcessInstance.process_type == process_type)
        .order_by(ProcessInstance.id.desc())
        .limit(1)
    )


def flashed(client, response):
    """Return the page where the flashed messages show: the redirect target, or the response itself."""
    if response.status_code in (301, 302, 303):
        return client.get(response.headers["Location"]).get_data(as_text=True)
    return response.get_data(as_text=True)


def fire_timer_of(instance_id, element_id):
    """Fire one waiting timer of an instance one second after its due time; returns the timer row."""
    from datetime import timedelta, timezone

    from app.processes.models import ProcessTimer
    from app.processes.timers import fire_timer

    timer = db.session.scalar(
        sa.select(ProcessTimer).where(
            ProcessTimer.instance_id == instance_id, ProcessTimer.element_id == element_id, ProcessTimer.status == "waiting"
        )
    )
    assert timer is not None, f"instance {instance_id} has no waiting timer {element_id}"
    due = timer.due_at if timer.due_at.tzinfo else timer.due_at.replace(tzinfo=timezone.utc)
    fire_timer(timer.id, now=due + timedelta(seconds=1))
    db.session.expire_all()
    return db.session.get(ProcessTimer, timer.id)

"""`flask heat audit verify`: every instance's hash chain, with the first broken event of each."""

import sqlalchemy as sa

from app.extensions import db
from app.processes.models import ProcessEvent
from tests.processes.conftest import instance_of, open_task, start_request, submit_task

EVENTS = ProcessEvent.__table__


def _verify(app, *options):
    return app.test_cli_runner().invoke(args=["heat", "audit", "verify", *options])


def _event(instance_id, event_type):
    return db.session.scalar(
        sa.select(ProcessEvent).where(ProcessEvent.instance_id == instance_id, ProcessEvent.event_type == event_type)
    )


def _events_count():
    return db.session.scalar(sa.select(sa.func.count(ProcessEvent.id)))


def _three_instances(make_account, login):
    """Two TJ suspensions (one decided) and one QD suspension."""
    tj_clerk, qd_clerk = login("tj_clerk"), login("qd_clerk")
    first, second = make_account("TJ", "87.35"), make_account("TJ", "90.00")
    third = make_account("QD", "80.00")
    start_request(tj_clerk, first.id)
    start_request(tj_clerk, second.id)
    start_request(qd_clerk, third.id)
    decided = instance_of(first.id, "suspension")
    response = submit_task(login("tj_approver"), open_task(decided.id, "company_approval").id, {"decision": "reject", "comment": "材料不全"})
    assert response.status_code == 302
    return decided, instance_of(second.id, "suspension"), instance_of(third.id, "suspension")


def test_verify_reports_ok_counts(app_ctx, demo, make_account, login):
    _three_instances(make_account, login)
    result = _verify(app_ctx)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ok: 3 instances, {_events_count()} events"


def test_verify_limits_to_company(app_ctx, demo, make_account, login):
    _, _, qd_instance = _three_instances(make_account, login)
    qd_events = db.session.scalar(sa.select(sa.func.count(ProcessEvent.id)).where(ProcessEvent.instance_id == qd_instance.id))
    result = _verify(app_ctx, "--company", "QD")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"ok: 1 instances, {qd_events} events"


def test_verify_unknown_company(app_ctx, demo):
    result = _verify(app_ctx, "--company", "XX")
    assert result.exit_code == 1
    assert "Company XX not found" in result.stderr


def test_verify_reports_edited_event(app_ctx, demo, make_account, login):
    decided, _, _ = _three_instances(make_account, login)
    completed = _event(decided.id, "completed")
    db.session.execute(sa.update(EVENTS).where(EVENTS.c.id == completed.id).values(data={"company_decision": "approve"}))
    db.session.commit()

    result = _verify(app_ctx)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"instance {decided.id}: broken at event {completed.seq}: its content does not match its hash"
    assert lines[1] == "failed: 1 of 3 instances have a broken audit chain"
    assert len(lines) == 2


def test_verify_reports_deleted_event(app_ctx, demo, make_account, login):
    decided, other, _ = _three_instances(make_account, login)
    claimed = _event(decided.id, "claimed")
    claimed_seq = claimed.seq
    db.session.execute(sa.delete(EVENTS).where(EVENTS.c.id == claimed.id))
    db.session.execute(sa.delete(EVENTS).where(EVENTS.c.instance_id == other.id))
    db.session.commit()

    result = _verify(app_ctx)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == f"instance {decided.id}: broken at event {claimed_seq + 1}: entry {claimed_seq} is missing"
    assert lines[1] == f"instance {other.id}: broken at event 1: entry 1 is missing"
    assert lines[2] == "failed: 2 of 3 instances have a broken audit chain"

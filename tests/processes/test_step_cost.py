"""The SQL statements and flushes of one company approval, which bound the cost of a process step."""

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.billing.services import season_receivable
from app.extensions import db
from app.hq.models import AccountSeasonBalance, CompanySeasonTotal, StepDailyTotal
from app.processes.models import HumanTask
from app.processes.services import claim_task, complete_task, start_process
from app.org.services import scope_for
from app.tenancy import scoped
from tests.processes.conftest import open_task, user

# Statements of one company approval that re-rates the season (see docs/benchmarks.md). SQLite
# also sends a no-op UPDATE before the row lock, one INSERT per audit event, and the daily
# and season totals as two statements each.
MAX_STATEMENTS = {"postgresql": 20, "sqlite": 25}


def _claimed_approval(make_account):
    """File a suspension and let the TJ approver claim its company approval; returns (approver, task id)."""
    account = make_account("TJ", "87.35")
    clerk, approver = user("tj_clerk"), user("tj_approver")
    with scoped(scope_for(clerk)):
        instance = start_process("suspension", account.id, clerk, {"reason": "vacant", "comment": ""})
    task_id = open_task(instance.id, "company_approval").id
    with scoped(scope_for(approver)):
        claim_task(task_id, approver)
    # A request has loaded its user and the user's company before the view runs.
    db.session.refresh(approver)
    assert approver.company.code == "TJ"
    return approver, task_id


def _complete_recording(task_id, approver):
    """Complete the task; returns (SQL statements sent, number of flushes that wrote rows)."""
    sent, flushes = [], []

    def record_statement(connection, cursor, statement, *args):
        sent.append(" ".join(statement.split()))

    def record_flush(session, flush_context):
        flushes.append(1)

    sa.event.listen(db.engine, "before_cursor_execute", record_statement)
    sa.event.listen(Session, "after_flush", record_flush)
    try:
        with scoped(scope_for(approver)):
            complete_task(task_id, approver, {"decision": "approve", "comment": "同意"})
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", record_statement)
        sa.event.remove(Session, "after_flush", record_flush)
    # The tenant scope's set_config calls are not the step's own statements.
    return [statement for statement in sent if "set_config" not in statement], len(flushes)


def test_approval_statement_count(demo, make_account):
    approver, task_id = _claimed_approval(make_account)
    sent, _flushes = _complete_recording(task_id, approver)

    dialect = db.engine.dialect.name
    assert len(sent) <= MAX_STATEMENTS[dialect], "\n".join(sent)
    # The current season, the line posted under the step's key and the receivable come in one read.
    season_reads = [statement for statement in sent if statement.startswith("SELECT") and "FROM season" in statement]
    assert len(season_reads) == 1, season_reads
    assert "ledger_entry" in season_reads[0]
    season_total_writes = [statement for statement in sent if "INTO hq_company_season_total" in statement]
    assert len(season_total_writes) == 1
    if dialect == "postgresql":
        # The account balance and the company season total are one statement.
        assert "INTO hq_account_season_balance" in season_total_writes[0]


def test_approval_flushes_twice(demo, make_account):
    approver, task_id = _claimed_approval(make_account)
    _sent, flushes = _complete_recording(task_id, approver)

    # The re-rating's ledger line, then everything else of the step in the save's flush.
    assert flushes == 2
    db.session.expire_all()
    task = db.session.get(HumanTask, task_id)
    assert task.status == "completed"
    assert task.decision == "approve"
    valve_task = open_task(task.instance_id, "valve_close")
    assert valve_task is not None
    assert valve_task.due_at is not None
    steps = db.session.scalar(sa.select(StepDailyTotal.completed).where(StepDailyTotal.task_spec_name == "company_approval"))
    assert steps == 1


def test_approval_updates_season_totals(demo, make_account):
    approver, task_id = _claimed_approval(make_account)
    account_id = db.session.get(HumanTask, task_id).account_id
    before = db.session.scalar(sa.select(CompanySeasonTotal.receivable).where(CompanySeasonTotal.company_id == demo["TJ"].id))
    balance_before = db.session.scalar(
        sa.select(AccountSeasonBalance.receivable).where(AccountSeasonBalance.account_id == account_id)
    )

    _complete_recording(task_id, approver)

    db.session.expire_all()
    balance_after = db.session.scalar(
        sa.select(AccountSeasonBalance.receivable).where(AccountSeasonBalance.account_id == account_id)
    )
    after = db.session.scalar(sa.select(CompanySeasonTotal.receivable).where(CompanySeasonTotal.company_id == demo["TJ"].id))
    season_id = db.session.scalar(sa.select(AccountSeasonBalance.season_id).where(AccountSeasonBalance.account_id == account_id))
    assert balance_after == season_receivable(account_id, season_id)
    assert balance_after < balance_before
    assert after - before == balance_after - balance_before

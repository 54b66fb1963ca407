"""PostgreSQL ends the app's connections (pg_terminate_backend): the next request and the next
task succeed on fresh connections, a transaction cut off in flight leaves nothing, and a
worker task cut off in flight is retried and stores its work once."""

import json
import threading

import pytest
import sqlalchemy as sa
from celery import Celery

from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account
from app.payments.models import Payment, ReceiptCounter
from tests.conftest import LEDGERS
from tests.faults.conftest import assert_retried_import_stored_once, queue_ledger_import, wait_for_import, wait_until, waiting_on_lock

pytestmark = pytest.mark.faults
TJ = next(e for e in json.loads((LEDGERS / "expected.json").read_text()) if e["file"] == "TJ-shared.xlsx")


def _terminate(blocker, where="TRUE"):
    """End every backend of the app's role on the test database that matches `where`; return how many.

    The owner's own connections (this probe, the blocker, the cleanup between tests) stay up.
    """
    with blocker.engine.connect() as probe:
        return len(probe.execute(sa.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = current_database() AND usename <> current_user AND ({where})"
        )).all())


@pytest.fixture
def tj_billed(pg_app, import_fixture):
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    account = db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-0001031"))
    db.session.commit()
    return account


def test_requests_survive_terminated_connections(tj_billed, login, blocker):
    account_id = tj_billed.id
    cashier = login("tj_cashier")
    assert cashier.get(f"/payments/accounts/{account_id}").status_code == 200
    db.session.commit()
    # Every pooled connection of the app is now dead on the server side.
    assert _terminate(blocker) >= 1

    assert cashier.get(f"/payments/accounts/{account_id}").status_code == 200
    response = cashier.post(
        f"/payments/accounts/{account_id}", data={"amount": "100.00", "method": "cash", "request_token": "after-drop"}
    )
    assert response.status_code == 302
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == 1


def test_cut_off_payment_rolls_back(pg_app, tj_billed, login, blocker):
    account_id = tj_billed.id
    cashier = login("tj_cashier")
    first = cashier.post(f"/payments/accounts/{account_id}", data={"amount": "100.00", "method": "cash", "request_token": "first"})
    assert first.status_code == 302
    db.session.commit()

    def state():
        db.session.rollback()
        return (
            db.session.scalar(sa.select(sa.func.count(Payment.id))),
            db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).where(LedgerEntry.kind == "payment")),
            db.session.scalar(sa.select(ReceiptCounter.next_number)),
        )

    before = state()
    db.session.commit()
    # The receipt counter is locked, so the payment waits after it locked the account.
    blocker.begin()
    blocker.execute(sa.select(ReceiptCounter).with_for_update())
    form = {"amount": "200.00", "method": "cash", "request_token": "cut-off"}
    answers = []

    def pay():
        with pg_app.app_context():
            answers.append(cashier.post(f"/payments/accounts/{account_id}", data=form))

    thread = threading.Thread(target=pay)
    thread.start()
    wait_until(lambda: _waiting_pids(blocker))
    assert _terminate(blocker, "wait_event_type = 'Lock'") == 1
    thread.join(timeout=30)
    blocker.rollback()

    response = answers[0]
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert "数据库连接中断，本次操作未保存" in response.get_data(as_text=True)
    assert state() == before

    # The cashier sends the same form again: one payment, and the next receipt number.
    retried = cashier.post(f"/payments/accounts/{account_id}", data=form)
    assert retried.status_code == 302
    payments = db.session.scalars(sa.select(Payment).order_by(Payment.id)).all()
    assert [p.request_token for p in payments] == ["first", "cut-off"]
    assert [p.receipt_no[-6:] for p in payments] == ["000001", "000002"]


def _waiting_pids(blocker):
    with blocker.engine.connect() as probe:
        return probe.scalars(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )).all()


@pytest.mark.slow
def test_worker_survives_terminated_connections(demo, processes, blocker, rabbit_vhost):
    worker = processes.celery_worker("fault_db_worker", rabbit_vhost)
    sender = Celery(broker=rabbit_vhost)
    try:
        # A first task opens the worker's pooled connection.
        sender.send_task("processes.fire_due_timers")
        wait_until(lambda: "processes.fire_due_timers" in processes.logs() and "succeeded" in processes.logs())
        assert _terminate(blocker, "application_name = 'fault_db_worker'") >= 1
    finally:
        sender.close()

    job = wait_for_import(queue_ledger_import(rabbit_vhost, demo["BJ"].id, "BJ-shared.xlsx"))
    assert worker.poll() is None
    assert job.status == "succeeded", processes.logs()


@pytest.mark.slow
def test_import_cut_off_mid_task_retries_once(demo, processes, blocker, rabbit_vhost):
    """The worker's connection is terminated while the import waits to write its arrears
    lines; the task is retried, and the ledger is stored once."""
    # The import inserts its accounts, then waits for this lock before its arrears lines.
    blocker.begin()
    blocker.execute(sa.text("LOCK TABLE ledger_entry IN SHARE MODE"))
    worker = processes.celery_worker("fault_db_import", rabbit_vhost)
    job_id = queue_ledger_import(rabbit_vhost, demo["TJ"].id, "TJ-shared.xlsx")
    wait_until(lambda: waiting_on_lock(blocker, "fault_db_import") or worker.poll() is not None)
    assert worker.poll() is None, processes.logs()
    assert _terminate(blocker, "application_name = 'fault_db_import' AND wait_event_type = 'Lock'") == 1
    blocker.rollback()

    job = wait_for_import(job_id)
    assert worker.poll() is None
    assert_retried_import_stored_once(processes, job, TJ)


def test_import_gives_up_after_last_retry(pg_app, demo, blocker):
    """On its last allowed retry, an import cut off mid-task is marked failed and stores nothing."""
    from app.celery_app import DATABASE_RETRIES
    from app.ledger.models import LedgerImport
    from app.ledger.services import sha256_of
    from app.tasks.ledger import import_ledger_task
    from tests.conftest import LEDGERS

    company_id = demo["TJ"].id
    content = (LEDGERS / "TJ-shared.xlsx").read_bytes()
    job = LedgerImport(company_id=company_id, filename="TJ-shared.xlsx", sha256=sha256_of(content), content=content)
    db.session.add(job)
    db.session.commit()
    job_id = job.id
    db.session.close()

    # The import inserts its accounts, then waits for this lock before its arrears lines.
    blocker.begin()
    blocker.execute(sa.text("LOCK TABLE ledger_entry IN SHARE MODE"))
    terminated = []

    def cut_off():
        wait_until(lambda: _waiting_pids(blocker))
        terminated.append(_terminate(blocker, "wait_event_type = 'Lock'"))

    thread = threading.Thread(target=cut_off)
    thread.start()
    # Run in this process as delivery number DATABASE_RETRIES + 1 of the task.
    result = import_ledger_task.apply(args=(job_id, company_id), retries=DATABASE_RETRIES)
    thread.join(timeout=30)
    blocker.rollback()

    assert terminated == [1]
    assert result.successful()
    db.session.rollback()
    job = db.session.get(LedgerImport, job_id)
    assert job.status == "failed"
    assert "数据库连接多次中断" in job.summary
    assert job.finished_at is not None
    assert db.session.scalar(sa.select(sa.func.count(Account.id)).filter_by(company_id=company_id)) == 0

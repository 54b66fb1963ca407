"""SIGKILL of the process importing a ledger, after it wrote every account and before its
commit: nothing of the import stays, and the rerun stores the whole ledger once."""

import json
from decimal import Decimal

import pytest
import sqlalchemy as sa
from celery import Celery

from app.billing.models import LedgerEntry
from app.billing.services import receivables_report, run_billing
from app.extensions import db
from app.ledger.models import LedgerImport
from app.ledger.services import sha256_of
from app.network.models import Account, Community
from tests.conftest import LEDGERS
from tests.faults.conftest import WAIT_S, backends_of, wait_until, waiting_on_lock

pytestmark = pytest.mark.faults
EXPECTED = {entry["file"]: entry for entry in json.loads((LEDGERS / "expected.json").read_text())}
TJ = EXPECTED["TJ-shared.xlsx"]


def _counts(company_id):
    db.session.rollback()
    return {
        "accounts": db.session.scalar(sa.select(sa.func.count(Account.id)).filter_by(company_id=company_id)),
        "distinct_numbers": db.session.scalar(sa.select(sa.func.count(sa.distinct(Account.account_no))).filter_by(company_id=company_id)),
        "communities": db.session.scalar(sa.select(sa.func.count(Community.id)).filter_by(company_id=company_id)),
        "arrears": db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).filter_by(company_id=company_id, kind="prior_arrears")),
        "arrears_total": db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(LedgerEntry.amount), 0)).filter_by(company_id=company_id, kind="prior_arrears")
        ),
    }


def _assert_whole_ledger(company_id):
    counts = _counts(company_id)
    assert counts["accounts"] == counts["distinct_numbers"] == TJ["accounts"]
    assert counts["arrears"] == TJ["prior_arrears"]["accounts"]
    assert Decimal(counts["arrears_total"]) == Decimal(TJ["prior_arrears"]["total"])
    run_billing("TJ", "2025-2026")
    report = receivables_report("TJ", "2025-2026")
    assert report["accounts"] == TJ["accounts"]
    assert report["receivable_total"] == TJ["receivable_total"]
    assert report["by_status"] == TJ["by_status"]


def _hold_ledger_entry_inserts(blocker):
    """Block every INSERT into ledger_entry until the test rolls back: the import's arrears lines come after its accounts."""
    blocker.begin()
    blocker.execute(sa.text("LOCK TABLE ledger_entry IN SHARE MODE"))


def test_killed_cli_import_stores_nothing(demo, processes, blocker):
    tj = demo["TJ"].id
    path = str(LEDGERS / "TJ-shared.xlsx")
    _hold_ledger_entry_inserts(blocker)
    importer = processes.flask("fault_import", "heat", "import-ledger", "--company", "TJ", path)
    wait_until(lambda: waiting_on_lock(blocker, "fault_import") or importer.poll() is not None)
    assert importer.poll() is None, processes.logs()
    processes.kill(importer)
    blocker.rollback()
    # The server ends the killed client's backend and rolls its transaction back.
    wait_until(lambda: backends_of(blocker, "fault_import") == 0)

    counts = _counts(tj)
    assert counts == {"accounts": 0, "distinct_numbers": 0, "communities": 0, "arrears": 0, "arrears_total": 0}
    assert db.session.scalar(sa.select(sa.func.count(LedgerImport.id)).filter_by(company_id=tj)) == 0

    rerun = processes.flask("fault_import_rerun", "heat", "import-ledger", "--company", "TJ", path)
    assert rerun.wait(timeout=WAIT_S) == 0, processes.logs()
    assert f"{TJ['accounts']} accounts imported ({TJ['accounts']} new, 0 updated, 0 unchanged)" in processes.logs()
    _assert_whole_ledger(tj)


@pytest.mark.slow
def test_killed_import_worker_resumes_job(demo, processes, blocker, rabbit_vhost):
    tj = demo["TJ"].id
    content = (LEDGERS / "TJ-shared.xlsx").read_bytes()
    job = LedgerImport(company_id=tj, filename="TJ-shared.xlsx", sha256=sha256_of(content), content=content)
    db.session.add(job)
    db.session.commit()
    job_id = job.id

    def job_row():
        db.session.rollback()
        return db.session.execute(
            sa.select(LedgerImport.status, LedgerImport.phase, LedgerImport.created_count).filter_by(id=job_id)
        ).one()

    _hold_ledger_entry_inserts(blocker)
    worker = processes.celery_worker("fault_import_worker", rabbit_vhost)
    sender = Celery(broker=rabbit_vhost)
    try:
        sender.send_task("ledger.import_ledger", args=[job_id, tj])
    finally:
        sender.close()
    wait_until(lambda: waiting_on_lock(blocker, "fault_import_worker") or worker.poll() is not None)
    assert worker.poll() is None, processes.logs()
    assert job_row()[:2] == ("running", "storing")
    processes.kill(worker)
    blocker.rollback()
    wait_until(lambda: backends_of(blocker, "fault_import_worker") == 0)
    assert _counts(tj)["accounts"] == 0
    # The job still says running: the worker died without a word, and the broker kept its unacknowledged task.
    assert job_row()[0] == "running"

    restarted = processes.celery_worker("fault_import_worker_2", rabbit_vhost)
    wait_until(lambda: job_row()[0] in ("succeeded", "rejected", "failed"))
    processes.stop(restarted)
    assert job_row() == ("succeeded", "storing", TJ["accounts"]), processes.logs()
    _assert_whole_ledger(tj)

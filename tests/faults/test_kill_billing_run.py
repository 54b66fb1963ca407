"""SIGKILL of `flask heat bill`, in the set-based path between two committed batches and in
the per-account loop before its one commit: the rerun bills every account exactly once."""

import json
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.billing.invariants import find_invariant_breaks
from app.billing.models import BillingRun, LedgerEntry
from app.billing.services import receivables_report
from app.extensions import db
from app.hq.models import CompanyDailyTotal
from app.messaging.models import OutboxEvent
from app.network.models import Account
from app.tariffs.services import get_season
from tests.conftest import LEDGERS
from tests.faults.conftest import WAIT_S, backends_of, wait_until, waiting_on_lock

pytestmark = pytest.mark.faults
TJ = next(e for e in json.loads((LEDGERS / "expected.json").read_text()) if e["file"] == "TJ-shared.xlsx")
BATCH = 200


def _charges(company_id, season_id):
    db.session.rollback()
    return db.session.execute(
        sa.select(LedgerEntry.account_id, LedgerEntry.cause_id, LedgerEntry.amount).filter_by(
            company_id=company_id, season_id=season_id, kind="charge"
        )
    ).all()


def _charged_account_ids(company_id):
    return db.session.scalars(
        sa.select(Account.id).filter_by(company_id=company_id).where(Account.billing_status != "not_connected").order_by(Account.id)
    ).all()


def _hold_charge_key(blocker, company_id, season_id, account_id):
    """Insert the account's charge key in the blocker's open transaction, so the run's INSERT of it waits."""
    blocker.begin()
    blocker.execute(LedgerEntry.__table__.insert().values(
        company_id=company_id, account_id=account_id, season_id=season_id, kind="charge", amount=0, cause_type="test",
        idempotency_key=f"charge:{season_id}:{account_id}", memo="",
    ))


def test_killed_billing_run_bills_once_on_rerun(import_fixture, demo, processes, blocker):
    import_fixture("TJ", "TJ-shared.xlsx")
    tj = demo["TJ"].id
    season = get_season(tj, "2025-2026")
    charged_ids = _charged_account_ids(tj)
    first_id = db.session.scalar(sa.select(sa.func.min(Account.id)).filter_by(company_id=tj))
    # An account of the fourth batch: the test inserts its charge key without committing, so
    # the run's INSERT waits on the unique key after three batches have committed.
    stuck = next(i for i in charged_ids if i >= first_id + 3 * BATCH)
    db.session.commit()
    _hold_charge_key(blocker, tj, season.id, stuck)

    env = {"HEATFLOW_BILLING_BATCH_SIZE": str(BATCH)}
    bill = processes.flask("fault_bill", "heat", "bill", "--company", "TJ", "--season", "2025-2026", **env)
    wait_until(lambda: waiting_on_lock(blocker, "fault_bill") or bill.poll() is not None)
    assert bill.poll() is None, processes.logs()
    processes.kill(bill)
    blocker.rollback()
    wait_until(lambda: backends_of(blocker, "fault_bill") == 0)

    killed_run = db.session.scalars(sa.select(BillingRun).filter_by(company_id=tj)).one()
    first_charges = _charges(tj, season.id)
    # Every batch but the stuck fourth may have committed (batches run side by side); the
    # fourth left nothing, and the run's totals match its lines.
    assert 0 < len(first_charges) < len(charged_ids)
    assert not [a for a, _, _ in first_charges if first_id + 3 * BATCH <= a < first_id + 4 * BATCH]
    assert [a for a, _, _ in first_charges if a < first_id + 3 * BATCH]
    assert killed_run.finished_at is None
    assert killed_run.accounts_billed == len(first_charges)
    assert killed_run.amount_posted == sum(amount for _, _, amount in first_charges)

    rerun = processes.flask("fault_bill_rerun", "heat", "bill", "--company", "TJ", "--season", "2025-2026", **env)
    assert rerun.wait(timeout=WAIT_S) == 0, processes.logs()
    charges = _charges(tj, season.id)
    per_account = Counter(account_id for account_id, _, _ in charges)
    assert sorted(per_account) == list(charged_ids)
    assert set(per_account.values()) == {1}
    runs = db.session.scalars(sa.select(BillingRun).filter_by(company_id=tj).order_by(BillingRun.id)).all()
    assert len(runs) == 2
    assert runs[1].finished_at is not None
    assert runs[1].accounts_billed == len(charged_ids) - len(first_charges)
    assert sum(r.amount_posted for r in runs) == sum(amount for _, _, amount in charges)

    report = receivables_report("TJ", "2025-2026")
    assert report["receivable_total"] == TJ["receivable_total"]
    assert report["by_status"] == TJ["by_status"]
    # One bill.issued event per account, written in the transaction of its charge.
    events = db.session.scalars(sa.select(OutboxEvent.payload).filter_by(company_id=tj, event_type="bill.issued")).all()
    event_accounts = Counter(json.loads(p)["account_id"] if isinstance(p, str) else p["account_id"] for p in events)
    assert event_accounts == per_account
    # The HQ season balances, season total and daily totals count each charge once.
    assert find_invariant_breaks(tj, season.id) == []
    daily_amount, daily_lines = db.session.execute(
        sa.select(sa.func.sum(CompanyDailyTotal.amount), sa.func.sum(CompanyDailyTotal.entries))
        .filter_by(company_id=tj, season_id=season.id, kind="charge")
    ).one()
    assert daily_lines == len(charges)
    assert daily_amount == sum(amount for _, _, amount in charges)


def test_killed_prorated_run_stores_nothing(import_fixture, demo, processes, blocker):
    """The per-account loop (taken when a charge is prorated) writes the whole run in one
    transaction: SIGKILL before its commit leaves no charge, event or run, and the rerun
    bills every account once."""
    import_fixture("TJ", "TJ-shared.xlsx")
    tj = demo["TJ"].id
    season = get_season(tj, "2025-2026")
    charged_ids = _charged_account_ids(tj)
    # An account connected a month into the season is prorated, so the set-based path is off.
    late = db.session.get(Account, charged_ids[0])
    late.connected_on = season.start_on + timedelta(days=31)
    # The test inserts the charge key of a middle account without committing, so the run's INSERT waits.
    stuck = charged_ids[len(charged_ids) // 2]
    db.session.commit()
    _hold_charge_key(blocker, tj, season.id, stuck)

    bill = processes.flask("fault_bill_loop", "heat", "bill", "--company", "TJ", "--season", "2025-2026")
    wait_until(lambda: waiting_on_lock(blocker, "fault_bill_loop") or bill.poll() is not None)
    assert bill.poll() is None, processes.logs()
    processes.kill(bill)
    blocker.rollback()
    wait_until(lambda: backends_of(blocker, "fault_bill_loop") == 0)

    assert _charges(tj, season.id) == []
    assert db.session.scalar(sa.select(sa.func.count(BillingRun.id)).filter_by(company_id=tj)) == 0
    assert db.session.scalar(sa.select(sa.func.count(OutboxEvent.id)).filter_by(company_id=tj, event_type="bill.issued")) == 0

    rerun = processes.flask("fault_bill_loop_rerun", "heat", "bill", "--company", "TJ", "--season", "2025-2026")
    assert rerun.wait(timeout=WAIT_S) == 0, processes.logs()
    charges = _charges(tj, season.id)
    per_account = Counter(account_id for account_id, _, _ in charges)
    assert sorted(per_account) == list(charged_ids)
    assert set(per_account.values()) == {1}
    run = db.session.scalars(sa.select(BillingRun).filter_by(company_id=tj)).one()
    assert run.finished_at is not None
    assert run.accounts_billed == len(charged_ids)
    assert run.amount_posted == sum(amount for _, _, amount in charges)
    # The late account's charge is prorated, and its memo names the days charged.
    late_charge = next(amount for account_id, _, amount in charges if account_id == late.id)
    assert 0 < late_charge
    memo = db.session.scalar(sa.select(LedgerEntry.memo).filter_by(account_id=late.id, kind="charge"))
    assert memo.startswith(f"{season.start_on + timedelta(days=31):%Y-%m-%d}至")
    events = db.session.scalars(sa.select(OutboxEvent.payload).filter_by(company_id=tj, event_type="bill.issued")).all()
    event_accounts = Counter(json.loads(p)["account_id"] if isinstance(p, str) else p["account_id"] for p in events)
    assert event_accounts == per_account

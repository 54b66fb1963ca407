"""Set-based billing on PostgreSQL against the per-account loop and the expected figures."""

import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

import app.billing.bulk as bulk
import app.billing.services as services
from app.billing.models import BillingRun, LedgerEntry
from app.billing.precision import set_group_precision
from app.billing.services import receivables_report, run_billing
from app.extensions import db
from app.network.models import Account
from app.org.models import Group
from tests.conftest import LEDGERS

EXPECTED = {e["file"]: e for e in json.loads((LEDGERS / "expected.json").read_text())}
CLEAN_FILES = [name for name, e in EXPECTED.items() if "errors" not in e]


@pytest.fixture(autouse=True)
def postgres_only(backend):
    if backend != "postgres":
        pytest.skip("the set-based billing path runs on PostgreSQL only")


@pytest.fixture
def bulk_calls(monkeypatch):
    """Count the runs that took the set-based path."""
    calls = []
    original = services.run_bulk_billing

    def _counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "run_bulk_billing", _counting)
    return calls


def _charge_lines(company_id, season_id):
    """Return {legacy number: [(amount, charge area, price, ratio, key, memo, cause type)]}."""
    rows = db.session.execute(
        sa.select(
            Account.legacy_no, LedgerEntry.amount, LedgerEntry.charge_area, LedgerEntry.unit_price, LedgerEntry.ratio,
            LedgerEntry.idempotency_key, LedgerEntry.memo, LedgerEntry.cause_type,
        )
        .join(Account, Account.id == LedgerEntry.account_id)
        .where(LedgerEntry.company_id == company_id, LedgerEntry.season_id == season_id, LedgerEntry.kind == "charge")
        .order_by(LedgerEntry.id)
    ).all()
    lines = {}
    for legacy_no, *line in rows:
        lines.setdefault(legacy_no, []).append(tuple(line))
    return lines


def _delete_charges(company_id):
    db.session.execute(sa.delete(LedgerEntry).where(LedgerEntry.company_id == company_id, LedgerEntry.kind == "charge"))
    db.session.execute(sa.delete(BillingRun).where(BillingRun.company_id == company_id))
    db.session.commit()


def _loop_then_bulk(monkeypatch, code, season_name):
    """Bill with the per-account loop, delete the lines, bill in bulk; return both line sets."""
    run = None
    with monkeypatch.context() as patch:
        patch.setattr(services, "bulk_billing_applies", lambda *args: False)
        run = run_billing(code, season_name)
    loop_lines = _charge_lines(run.company_id, run.season_id)
    _delete_charges(run.company_id)
    run_billing(code, season_name)
    return loop_lines, _charge_lines(run.company_id, run.season_id)


def _assert_same_lines(loop_lines, bulk_lines):
    assert loop_lines, "the loop posted no lines"
    assert sorted(bulk_lines) == sorted(loop_lines)
    for legacy_no, lines in loop_lines.items():
        assert bulk_lines[legacy_no] == lines, legacy_no


@pytest.mark.parametrize("filename", CLEAN_FILES)
def test_bulk_matches_loop_per_account(import_fixture, monkeypatch, bulk_calls, filename):
    expected = EXPECTED[filename]
    assert import_fixture(expected["subsidiary"], filename).ok

    loop_lines, bulk_lines = _loop_then_bulk(monkeypatch, expected["subsidiary"], expected["season"])

    assert len(bulk_calls) == 1
    _assert_same_lines(loop_lines, bulk_lines)


@pytest.mark.parametrize("quantum, rounding", [("0.01", "half_even"), ("0.1", "half_up"), ("1", "half_even")])
def test_bulk_matches_loop_group_rule(import_fixture, monkeypatch, bulk_calls, quantum, rounding):
    expected = EXPECTED["QD-shared.xlsx"]
    assert import_fixture("QD", "QD-shared.xlsx").ok
    set_group_precision(db.session.scalar(sa.select(Group).filter_by(code="NHG")), Decimal(quantum), rounding)
    db.session.commit()

    loop_lines, bulk_lines = _loop_then_bulk(monkeypatch, "QD", expected["season"])

    assert len(bulk_calls) == 1
    _assert_same_lines(loop_lines, bulk_lines)


@pytest.mark.parametrize("filename", CLEAN_FILES)
def test_bulk_receivables_expected(import_fixture, bulk_calls, filename):
    expected = EXPECTED[filename]
    assert import_fixture(expected["subsidiary"], filename).ok

    run = run_billing(expected["subsidiary"], expected["season"])
    report = receivables_report(expected["subsidiary"], expected["season"])

    assert len(bulk_calls) == 1
    assert run.finished_at is not None
    assert report["accounts"] == expected["accounts"]
    assert report["receivable_total"] == expected["receivable_total"]
    assert report["by_status"] == expected["by_status"]
    for legacy_no, amount in expected["sample_accounts"].items():
        assert report["by_account"][legacy_no] == amount, legacy_no


def test_bulk_rerun_posts_nothing(import_fixture, bulk_calls):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    first = run_billing("TJ", "2025-2026")

    second = run_billing("TJ", "2025-2026")

    assert len(bulk_calls) == 2
    assert first.accounts_billed > 0
    assert second.accounts_billed == 0
    assert second.amount_posted == Decimal("0.00")


def test_bulk_interrupted_run_resumes(import_fixture, monkeypatch, bulk_calls):
    expected = EXPECTED["TJ-shared.xlsx"]
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    monkeypatch.setattr(bulk, "BATCH_SIZE", 500)
    original = bulk._post_batch
    batches = []

    def _crash_on_second_batch(*args):
        batches.append(args)
        if len(batches) == 2:
            raise RuntimeError("simulated crash after the first batch")
        return original(*args)

    monkeypatch.setattr(bulk, "_post_batch", _crash_on_second_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_billing("TJ", expected["season"])
    company_id = db.session.scalar(sa.select(Account.company_id).where(Account.legacy_no.like("TJ-%")).limit(1))
    after_crash = db.session.scalar(
        sa.select(sa.func.count()).where(LedgerEntry.company_id == company_id, LedgerEntry.kind == "charge")
    )
    monkeypatch.setattr(bulk, "_post_batch", original)

    resumed = run_billing("TJ", expected["season"])
    per_account = db.session.execute(
        sa.select(LedgerEntry.account_id, sa.func.count())
        .where(LedgerEntry.company_id == company_id, LedgerEntry.kind == "charge")
        .group_by(LedgerEntry.account_id)
    ).all()
    report = receivables_report("TJ", expected["season"])

    assert 0 < after_crash < len(per_account)
    assert resumed.accounts_billed == len(per_account) - after_crash
    assert {count for _, count in per_account} == {1}
    assert report["receivable_total"] == expected["receivable_total"]
    assert report["by_status"] == expected["by_status"]

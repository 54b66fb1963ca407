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
from app.messaging.models import OutboxEvent
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


# Accounts of every kind the set-based path prices, with the charge worked by hand:
# (company, building area, usable area, user type, status, lift, heat source kind, billing method, charge).
MIXED_ACCOUNTS = [
    # QD: residents pay usable area, or 0.75 × building area without one, at 30.40; 报停 pays 0.30.
    ("QD", "92.17", None, "residential", "normal", False, "", "metered", "2101.48"),  # 69.1275 × 30.40 = 2101.476
    ("QD", "100", "80.5", "low_income", "normal", False, "", "area", "2447.20"),  # 80.5 × 30.40
    ("QD", "100", "80.5", "residential", "suspended", False, "", "area", "734.16"),  # 2447.20 × 0.30
    ("QD", "120.33", "99", "non_residential", "forced_off", False, "", "area", "3978.11"),  # 120.33 × 33.06 = 3978.1098
    ("QD", "60", None, "residential", "not_connected", False, "", "area", None),
    # SJZ: 0.90 of the building area, 0.85 with a lift, at 22.00; 报停 pays nothing.
    ("SJZ", "100", None, "residential", "normal", True, "", "area", "1870.00"),  # 100 × 0.85 × 22
    ("SJZ", "100", None, "residential", "normal", False, "", "area", "1980.00"),  # 100 × 0.90 × 22
    ("SJZ", "77.77", None, "residential", "suspended", True, "", "area", "0.00"),
    ("SJZ", "55.55", None, "non_residential", "normal", True, "", "area", "1722.05"),  # 55.55 × 31
    # BJ: residents heated by a gas boiler pay 30.00 instead of 24.00.
    ("BJ", "87.35", None, "residential", "normal", False, "燃气锅炉", "area", "2620.50"),  # 87.35 × 30
    ("BJ", "87.35", None, "residential", "normal", False, "热电联产", "area", "2096.40"),  # 87.35 × 24
    ("BJ", "87.35", None, "non_residential", "suspended", False, "燃气锅炉", "area", "1179.23"),  # 87.35 × 45 × 0.30 = 1179.225
    # TJ: 40.0002 × 25 = 1000.005, a tie at the fen.
    ("TJ", "40.0002", None, "residential", "normal", False, "", "area", "1000.01"),
    ("TJ", "87.35", None, "residential", "suspended", False, "", "area", "436.75"),  # 2183.75 × 0.20
]
# Half-even rounding changes the two ties: 1000.005 → 1000.00 and 1179.225 → 1179.22.
HALF_EVEN = {"40.0002": "1000.00", ("87.35", "non_residential"): "1179.22"}


def _bill_events(run_id):
    """Return {account_id: payload text} of the bill.issued events of a billing run."""
    rows = db.session.execute(
        sa.select(OutboxEvent.key, OutboxEvent.payload).where(OutboxEvent.key.like(f"bill.issued:{run_id}:%"))
    ).all()
    return {int(key.rsplit(":", 1)[1]): payload for key, payload in rows}


@pytest.mark.parametrize("rounding", ["half_up", "half_even"])
def test_bulk_matches_hand_figures_and_loop_on_mixed_accounts(add_account, monkeypatch, bulk_calls, rounding):
    set_group_precision(db.session.scalar(sa.select(Group).filter_by(code="NHG")), Decimal("0.01"), rounding)
    db.session.commit()
    accounts = []
    for code, area, usable, user_type, status, lift, kind, method, charge in MIXED_ACCOUNTS:
        account = add_account(code, area, usable_area=usable, user_type=user_type, status=status, lift=lift,
                              heat_source_kind=kind, billing_method=method)
        if rounding == "half_even":
            charge = HALF_EVEN.get(area, HALF_EVEN.get((area, user_type), charge))
        accounts.append((account.id, code, charge))

    for code in ("QD", "SJZ", "BJ", "TJ"):
        with monkeypatch.context() as patch:
            patch.setattr(services, "bulk_billing_applies", lambda *args: False)
            loop_run = run_billing(code, "2025-2026")
        loop_lines = _charge_lines(loop_run.company_id, loop_run.season_id)
        loop_events = _bill_events(loop_run.id)
        _delete_charges(loop_run.company_id)
        bulk_run = run_billing(code, "2025-2026")

        assert _charge_lines(bulk_run.company_id, bulk_run.season_id) == loop_lines
        bulk_events = _bill_events(bulk_run.id)
        assert bulk_events == {
            account_id: payload.replace(f'"billing_run_id":{loop_run.id},', f'"billing_run_id":{bulk_run.id},')
            for account_id, payload in loop_events.items()
        }
        assert (bulk_run.accounts_billed, bulk_run.amount_posted) == (loop_run.accounts_billed, loop_run.amount_posted)
    assert len(bulk_calls) == 4

    amounts = dict(db.session.execute(sa.select(LedgerEntry.account_id, LedgerEntry.amount).filter_by(kind="charge")).all())
    for account_id, code, charge in accounts:
        assert amounts.get(account_id) == (Decimal(charge) if charge else None), (code, charge)

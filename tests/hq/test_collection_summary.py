"""The HQ collection summary and its season totals: received counts each account's payments only up to its receivable."""

from datetime import datetime, timezone
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app

import app.billing.services as billing_services
from app.billing.arrears import write_off
from app.billing.invariants import find_invariant_breaks
from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.hq.models import AccountSeasonBalance, CompanyAccountCount, CompanySeasonTotal
from app.hq.services import collection_summary
from app.hq.totals import capped_received, rebuild_account_counts, rebuild_season_totals
from app.network.models import Account
from app.org.models import User
from app.payments.refunds import request_refund
from app.payments.services import amount_owed, collect_payment
from app.tariffs.models import Season
from tests.hq.conftest import SEASON, accounts_of, post_line


def _tj(summary):
    return next(row for row in summary["companies"] if row["code"] == "TJ")


def _money(text):
    return Decimal(text.replace(",", ""))


def test_received_is_capped_per_account(import_fixture, demo):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    run_billing("TJ", SEASON)
    before = _tj(collection_summary(SEASON))
    partly, over, waived_then_paid = accounts_of(demo["TJ"], 3)
    charge = db.session.scalar(
        sa.select(LedgerEntry.amount).filter_by(account_id=over.id, kind="charge")
    )
    now = datetime.now(timezone.utc)
    # 100.00 paid on the first account counts whole.
    post_line(partly, "payment", "-100.00", now, "test-part")
    # The second pays its charge and 500.00 more: only the charge counts, the rest is credit.
    post_line(over, "payment", str(-(charge + Decimal("500.00"))), now, "test-over")
    # The third has 30.00 waived and pays 50.00: both lower the arrears, the payment counts 50.00.
    post_line(waived_then_paid, "waiver", "-30.00", now, "test-waiver")
    post_line(waived_then_paid, "payment", "-50.00", now, "test-paid")

    after = _tj(collection_summary(SEASON))
    assert _money(after["receivable"]) == _money(before["receivable"]) - Decimal("30.00")
    assert _money(after["received"]) == _money(before["received"]) + Decimal("100.00") + charge + Decimal("50.00")
    assert _money(after["arrears"]) == _money(after["receivable"]) - _money(after["received"])


def _tj_figures():
    row = _tj(collection_summary(SEASON))
    return _money(row["receivable"]), _money(row["received"])


def _season_tables():
    balances = db.session.execute(
        sa.select(AccountSeasonBalance.company_id, AccountSeasonBalance.season_id, AccountSeasonBalance.account_id,
                  AccountSeasonBalance.receivable, AccountSeasonBalance.received)
    ).all()
    totals = db.session.execute(
        sa.select(CompanySeasonTotal.company_id, CompanySeasonTotal.season_id, CompanySeasonTotal.receivable,
                  CompanySeasonTotal.received)
    ).all()
    return sorted(balances), sorted(totals)


def _assert_equal_to_rebuild():
    maintained = _season_tables()
    assert maintained[0], "no account season balances were maintained"
    rebuild_season_totals(db.session.connection())
    db.session.commit()
    assert _season_tables() == maintained


def _charge_of(account):
    return db.session.scalar(sa.select(LedgerEntry.amount).filter_by(account_id=account.id, kind="charge"))


def test_capped_received_cases():
    cases = [
        ("paid less than owed", "100.00", "40.00", "40.00"),
        ("paid exactly", "100.00", "100.00", "100.00"),
        ("overpaid", "100.00", "150.00", "100.00"),
        ("refunded beyond payments", "100.00", "-20.00", "-20.00"),
        ("nothing owed", "0.00", "50.00", "0.00"),
        ("negative receivable", "-10.00", "50.00", "0.00"),
    ]
    for name, receivable, received, expected in cases:
        assert capped_received(Decimal(receivable), Decimal(received)) == Decimal(expected), name


def test_each_line_kind_moves_capped_total(import_fixture, demo):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    run_billing("TJ", SEASON)
    [account] = accounts_of(demo["TJ"], 1)
    charge = _charge_of(account)
    assert charge > Decimal("1000.00")
    now = datetime.now(timezone.utc)
    # Each step posts lines on one account and gives the change it makes to
    # (receivable, received) of the company's season.
    steps = [
        ("overpayment counts up to the charge", [("payment", -(charge + 500))], (0, charge)),
        ("refund within the overpayment changes nothing", [("refund", Decimal("300.00"))], (0, 0)),
        ("reversal below the charge counts", [("reversal", Decimal("400.00"))], (0, -200)),
        ("re-rating under the payments caps lower", [("rerate", -(charge - 100))], (-(charge - 100), 300 - charge)),
        ("late fees and credit stay out", [("late_fee", Decimal("50.00")), ("late_fee_payment", Decimal("-50.00")),
                                           ("credit", Decimal("-70.00"))], (0, 0)),
        ("re-rating back restores the cap", [("rerate", charge - 100)], (charge - 100, charge - 300)),
        ("write-off of the rest leaves received", [("write_off", Decimal("-200.00"))], (-200, 0)),
        ("waiver to nothing counts nothing", [("waiver", -(charge - 200))], (-(charge - 200), -(charge - 200))),
        ("settlement owed again counts up to it", [("settlement", Decimal("100.00"))], (100, 100)),
    ]
    for number, (name, lines, (receivable_change, received_change)) in enumerate(steps):
        before = _tj_figures()
        for index, (kind, amount) in enumerate(lines):
            post_line(account, kind, str(amount), now, f"test-step-{number}-{index}")
        after = _tj_figures()
        assert after[0] - before[0] == receivable_change, name
        assert after[1] - before[1] == received_change, name
    _assert_equal_to_rebuild()


def test_lines_without_season_change_nothing(import_fixture, demo):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    run_billing("TJ", SEASON)
    [account] = accounts_of(demo["TJ"], 1)
    before = _tj_figures()
    for key, kind, amount in (("test-prior", "prior_arrears", "300.00"), ("test-prior-paid", "payment", "-300.00")):
        db.session.add(LedgerEntry(
            company_id=account.company_id, account_id=account.id, season_id=None, kind=kind, amount=Decimal(amount),
            cause_type="test", idempotency_key=key,
        ))
    db.session.commit()
    assert _tj_figures() == before
    _assert_equal_to_rebuild()


def test_rolled_back_payment_leaves_totals(import_fixture, demo):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    run_billing("TJ", SEASON)
    [account] = accounts_of(demo["TJ"], 1)
    season = db.session.scalar(sa.select(Season).filter_by(company_id=account.company_id, name=SEASON))
    before = _season_tables()
    db.session.add(LedgerEntry(
        company_id=account.company_id, account_id=account.id, season_id=season.id, kind="payment",
        amount=Decimal("-100.00"), cause_type="test", idempotency_key="test-rolled-back",
    ))
    db.session.flush()
    assert _season_tables() != before
    db.session.rollback()
    assert _season_tables() == before


def test_payment_before_billing_is_capped(import_fixture, demo, backend, monkeypatch):
    """Payments posted before the charge count once it is billed, by the set-based path on PostgreSQL and the loop on SQLite."""
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    partly, over = accounts_of(demo["TJ"], 2)
    now = datetime.now(timezone.utc)
    post_line(partly, "payment", "-100.00", now, "test-early-part")
    post_line(over, "payment", "-99999.00", now, "test-early-over")
    assert _tj_figures() == (Decimal("0.00"), Decimal("0.00"))
    bulk_runs = []
    original = billing_services.run_bulk_billing
    monkeypatch.setattr(billing_services, "run_bulk_billing", lambda *args, **kwargs: bulk_runs.append(args) or original(*args, **kwargs))

    run = run_billing("TJ", SEASON)

    assert len(bulk_runs) == (1 if backend == "postgres" else 0)
    receivable, received = _tj_figures()
    assert receivable == run.amount_posted
    assert received == Decimal("100.00") + _charge_of(over)
    _assert_equal_to_rebuild()


def test_service_postings_equal_rebuild(hq_ledger, demo):
    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    first, second = accounts_of(demo["TJ"], 6)[4:6]
    season = db.session.scalar(sa.select(Season).filter_by(company_id=first.company_id, name=SEASON))
    payment = collect_payment(first, str(amount_owed(first).total), "cash", cashier)
    request_refund(payment.id, "400.00", "重复缴费", cashier)
    write_off(second, season, "10.00", "用户去世无继承人", cashier)
    db.session.commit()
    _assert_equal_to_rebuild()
    assert [b for b in find_invariant_breaks(first.company_id, season.id) if b.check == "hq_totals"] == []


def test_invariant_check_finds_drifted_totals(hq_ledger):
    account = hq_ledger["paid"][0]
    season = db.session.scalar(sa.select(Season).filter_by(company_id=account.company_id, name=SEASON))
    balance = db.session.scalar(sa.select(AccountSeasonBalance).filter_by(account_id=account.id, season_id=season.id))
    balance.received += Decimal("1.00")
    db.session.commit()

    found = [b for b in find_invariant_breaks(account.company_id, season.id) if b.check == "hq_totals"]

    assert [b.account_id for b in found] == [account.id]
    assert found[0].detail.startswith("HQ season balance receivable ")
    assert "received 101.00 but ledger" in found[0].detail
    total = db.session.scalar(sa.select(CompanySeasonTotal).filter_by(company_id=account.company_id, season_id=season.id))
    total.received -= Decimal("0.01")
    db.session.commit()
    found = [b for b in find_invariant_breaks(account.company_id, season.id) if b.check == "hq_totals"]
    assert [b.account_id for b in found] == [account.id, None]

    result = current_app.test_cli_runner().invoke(args=["heat", "hq-rebuild-totals"])
    assert result.exit_code == 0, result.output
    assert "account-season rows" in result.output
    db.session.expire_all()
    assert [b for b in find_invariant_breaks(account.company_id, season.id) if b.check == "hq_totals"] == []


def _account_counts():
    return dict(db.session.execute(sa.select(Account.company_id, sa.func.count()).group_by(Account.company_id)).all())


def test_accounts_counted_as_imported(import_fixture, demo):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    assert import_fixture("QD", "QD-shared.xlsx").ok
    counts = _account_counts()
    assert counts[demo["TJ"].id] > 0
    summary = collection_summary(SEASON)
    for company in (demo["TJ"], demo["QD"]):
        row = next(row for row in summary["companies"] if row["code"] == company.code)
        assert row["accounts"] == counts[company.id], company.code
    assert summary["group"]["accounts"] == sum(counts.values())
    stored = dict(db.session.execute(sa.select(CompanyAccountCount.company_id, CompanyAccountCount.accounts)).all())
    rebuild_account_counts(db.session.connection())
    db.session.commit()
    assert dict(db.session.execute(sa.select(CompanyAccountCount.company_id, CompanyAccountCount.accounts)).all()) == stored


def test_rebuild_command_restores_account_counts(import_fixture, demo, app):
    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    expected = _tj(collection_summary(SEASON))["accounts"]
    db.session.execute(sa.delete(CompanyAccountCount))
    db.session.commit()
    assert _tj(collection_summary(SEASON))["accounts"] == 0

    result = app.test_cli_runner().invoke(args=["heat", "hq-rebuild-totals"])

    assert result.exit_code == 0, result.output
    db.session.expire_all()
    assert _tj(collection_summary(SEASON))["accounts"] == expected

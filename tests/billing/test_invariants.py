"""The receivable identity: receivable = received + waived + written off + outstanding − credit."""

import itertools
from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import app.billing.invariants as invariants
from app.billing.invariants import InvariantError, account_figures, find_invariant_breaks
from app.billing.late_fees import post_late_fee
from app.billing.models import LedgerEntry
from app.billing.services import rerate_account, run_billing
from app.extensions import db
from app.money import round_money
from app.org.models import User
from app.payments.services import amount_owed, collect_payment
from app.tariffs.services import get_season
from app.tasks.billing import check_invariants_task

SEASON = "2025-2026"
OPERATIONS = st.lists(
    st.one_of(
        st.just(("bill",)),
        st.tuples(st.just("rerate"), st.sampled_from(["suspended", "normal", "forced_off"])),
        st.tuples(st.just("pay_partial"), st.integers(min_value=1, max_value=99)),
        st.just(("pay_rest",)),
        st.tuples(st.just("waive"), st.sampled_from(["10.00", "0.01", "300.00"])),
        st.tuples(st.just("late_fee"), st.dates(min_value=date(2025, 12, 30), max_value=date(2026, 3, 31))),
    ),
    min_size=1,
    max_size=7,
)
_steps = itertools.count(1)


@pytest.fixture
def tj(demo):
    """TJ's company, season and cashier."""
    company = demo["TJ"]
    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    return company, get_season(company.id, SEASON), cashier


def _billed(account, season):
    return db.session.scalar(
        sa.select(sa.func.count(LedgerEntry.id)).filter_by(account_id=account.id, season_id=season.id, kind="charge")
    )


def _apply(operation, account, season, cashier):
    """Carry out one operation the way staff would; skip it when it makes no sense in that state."""
    step = next(_steps)
    name = operation[0]
    owed = amount_owed(account).total
    if name == "bill":
        run_billing("TJ", SEASON)
    elif name == "rerate" and _billed(account, season):
        rerate_account(account, season, operation[1], "process_instance", step, key=f"test-rerate:{step}")
        db.session.commit()
    elif name == "pay_partial" and owed > 0:
        amount = max(round_money(owed * operation[1] / 100), Decimal("0.01"))
        collect_payment(account, str(amount), "cash", cashier)
    elif name == "pay_rest" and owed > 0:
        collect_payment(account, str(owed), "cash", cashier)
    elif name == "waive" and _billed(account, season):
        db.session.add(
            LedgerEntry(
                company_id=account.company_id, account_id=account.id, season_id=season.id, kind="waiver",
                amount=-Decimal(operation[1]), cause_type="process_instance", cause_id=step,
                idempotency_key=f"test-waiver:{step}",
            )
        )
        db.session.commit()
    elif name == "late_fee":
        post_late_fee(account, season, operation[1])
        db.session.commit()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_invariant_after_every_operation(add_account, tj, operations):
    # The fixtures run once for all examples, so each example adds its own account.
    company, season, cashier = tj
    account = add_account("TJ", "87.35")

    for operation in operations:
        _apply(operation, account, season, cashier)

        assert find_invariant_breaks(company.id, season.id) == [], operation


def test_figures_after_partial_payment_and_waiver(add_account, tj):
    # 2183.75 billed, 1000.00 paid, 100.00 waived: 2183.75 = 1000.00 + 100.00 + 0.00 + 1083.75.
    company, season, cashier = tj
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    collect_payment(account, "1000.00", "cash", cashier)
    _apply(("waive", "100.00"), account, season, cashier)

    figures = account_figures(account, season.id)

    assert figures.receivable == Decimal("2183.75")
    assert figures.received == Decimal("1000.00")
    assert figures.waived == Decimal("100.00")
    assert figures.outstanding == Decimal("1083.75")
    assert figures.credit == Decimal("0.00")
    assert figures.gap == 0


def test_credit_after_rerate_of_paid_season(add_account, tj):
    # Paid 2183.75 in full, then 报停 cuts the receivable to 436.75: 1747.00 is a credit.
    company, season, cashier = tj
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    collect_payment(account, "2183.75", "cash", cashier)
    rerate_account(account, season, "suspended", "process_instance", 1, key="test-credit")
    db.session.commit()

    figures = account_figures(account, season.id)

    assert figures.receivable == Decimal("436.75")
    assert figures.outstanding == Decimal("0.00")
    assert figures.credit == Decimal("1747.00")
    assert find_invariant_breaks(company.id, season.id) == []


def test_unbacked_payment_line_reported(add_account, tj):
    company, season, _cashier = tj
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    db.session.add(
        LedgerEntry(
            company_id=company.id, account_id=account.id, season_id=season.id, kind="payment", amount=Decimal("-50.00"),
            cause_type="payment", idempotency_key="test-orphan-payment",
        )
    )
    db.session.commit()

    breaks = check_invariants_task(company.id, season.id)

    assert [b["check"] for b in breaks] == ["payment_allocation"]
    assert breaks[0]["account_id"] == account.id
    assert "payment lines 50.00" in breaks[0]["detail"]


def test_positive_payment_line_reported(add_account, tj):
    company, season, _cashier = tj
    account = add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    db.session.add(
        LedgerEntry(
            company_id=company.id, account_id=account.id, season_id=season.id, kind="payment", amount=Decimal("50.00"),
            cause_type="payment", idempotency_key="test-positive-payment",
        )
    )
    db.session.commit()

    checks = {b.check for b in find_invariant_breaks(company.id, season.id)}

    assert "sign" in checks


def test_wrong_outstanding_reported(add_account, tj, monkeypatch):
    company, season, _cashier = tj
    add_account("TJ", "87.35")
    run_billing("TJ", SEASON)
    real_amount_owed = invariants.amount_owed

    def understated(account):
        owed = real_amount_owed(account)
        season_owed = owed.seasons[0]
        wrong = type(season_owed)(season_owed.season, season_owed.receivable, season_owed.received + Decimal("1.00"))
        return type(owed)(owed.arrears, owed.arrears_received, (wrong,))

    monkeypatch.setattr(invariants, "amount_owed", understated)

    breaks = find_invariant_breaks(company.id, season.id)

    assert [(b.check, b.account_id is None) for b in breaks] == [("identity", False), ("identity", True)]


def test_unknown_season_rejected(tj, demo):
    company, _season, _cashier = tj
    other = get_season(demo["QD"].id, SEASON)

    with pytest.raises(InvariantError, match="没有编号为"):
        find_invariant_breaks(company.id, other.id)

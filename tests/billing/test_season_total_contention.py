"""Concurrent postings of one company on PostgreSQL.

Every receivable or received line locks its company's season total row until commit, so
counter payments, re-rates and billing runs of one company queue on that row. The test runs
them at once, each thread on its own connection, and checks that none deadlocks and that
the maintained totals still equal the ledger sums, so no update was lost.
"""

import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa
from celery._state import _set_task_join_will_block

from app.billing.invariants import find_invariant_breaks
from app.billing.models import RECEIVABLE_KINDS, RECEIVED_KINDS, LedgerEntry
from app.billing.services import rerate_account, run_billing
from app.extensions import db
from app.hq.models import AccountSeasonBalance, CompanySeasonTotal
from app.hq.totals import capped_received
from app.locking import lock_row
from app.network.models import Account
from app.org.models import User
from app.payments.models import Payment
from app.payments.services import collect_payment
from app.tariffs.models import Season
from app.tariffs.services import get_season
from app.tenancy import SYSTEM_SCOPE, set_scope

SEASON = "2025-2026"
ACCOUNTS = 8
PAYERS = 3
RATERS = 2
# Transactions per thread. The billing thread adds and bills one account per round.
ROUNDS = 8
THREAD_TIMEOUT_S = 120
PAYMENT = Decimal("1.00")


def _in_thread(app, work, start_together, errors):
    """Run `work()` in an app context of its own, so it gets its own session and connection, and store any exception."""
    with app.app_context():
        set_scope(SYSTEM_SCOPE)
        try:
            # All threads start posting at the same moment, not one after another as they are created.
            start_together.wait(THREAD_TIMEOUT_S)
            work()
        except Exception as error:  # noqa: BLE001  the main thread asserts that none was raised
            errors.append(error)
        finally:
            db.session.rollback()
            db.session.remove()


def _pay(account_ids, cashier_id, start):
    cashier = db.session.get(User, cashier_id)
    for round_no in range(ROUNDS):
        account = db.session.get(Account, account_ids[(start + round_no) % len(account_ids)])
        collect_payment(account, str(PAYMENT), "cash", cashier)


def _rerate(account_ids, season_id, start):
    for round_no in range(ROUNDS):
        account_id = account_ids[(start + round_no) % len(account_ids)]
        # The account row lock, as the suspension step takes it before reading the receivable.
        account = lock_row(Account, account_id)
        new_status = "suspended" if account.billing_status == "normal" else "normal"
        season = db.session.get(Season, season_id)
        rerate_account(account, season, new_status, "test", None, key=f"contention:{start}:{round_no}")
        db.session.commit()


def _bill_new_accounts(template_id):
    template = db.session.get(Account, template_id)
    for round_no in range(ROUNDS):
        room = 500 + round_no
        db.session.add(Account(
            company_id=template.company_id, account_no=f"{template.account_no[:-4]}{room:04d}", unit_id=template.unit_id,
            room=str(room), station_id=template.station_id, building_area=template.building_area,
            user_type=template.user_type, billing_status="normal",
        ))
        db.session.commit()
        run = run_billing("TJ", SEASON)
        assert run.accounts_billed == 1


def _ledger_season_figures(company_id, season_id):
    """Return {account_id: (receivable, received)} summed from the ledger."""
    receivable = sa.func.sum(sa.case((LedgerEntry.kind.in_(RECEIVABLE_KINDS), LedgerEntry.amount), else_=0))
    received = -sa.func.sum(sa.case((LedgerEntry.kind.in_(RECEIVED_KINDS), LedgerEntry.amount), else_=0))
    rows = db.session.execute(
        sa.select(LedgerEntry.account_id, receivable, received)
        .where(LedgerEntry.company_id == company_id, LedgerEntry.season_id == season_id,
               LedgerEntry.kind.in_(RECEIVABLE_KINDS + RECEIVED_KINDS))
        .group_by(LedgerEntry.account_id)
    )
    return {account_id: (receivable, received) for account_id, receivable, received in rows}


def test_concurrent_postings_keep_season_totals(backend, app_ctx, demo, add_many_accounts):
    if backend != "postgres":
        pytest.skip("SQLite runs one writer at a time, so its postings cannot deadlock or interleave")
    account_ids = add_many_accounts("TJ", ACCOUNTS)
    run_billing("TJ", SEASON)
    company_id = demo["TJ"].id
    season_id = get_season(company_id, SEASON).id
    cashier_id = db.session.scalar(sa.select(User.id).filter_by(username="tj_cashier"))
    db.session.commit()

    errors = []
    work = [lambda start=start: _pay(account_ids, cashier_id, start) for start in range(PAYERS)]
    work += [lambda start=start: _rerate(account_ids, season_id, PAYERS + start) for start in range(RATERS)]
    work.append(lambda: _bill_new_accounts(account_ids[0]))
    start_together = threading.Barrier(len(work))
    threads = [threading.Thread(target=_in_thread, args=(app_ctx, job, start_together, errors)) for job in work]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(THREAD_TIMEOUT_S)
    finally:
        # An eager apply_async sets Celery's process-wide "join would block" flag and restores
        # the value it found (denied_join_result in celery 5.5.3). Payments in several threads send
        # their e-invoice task eagerly, so the flag can be left set, and a later test's
        # EagerResult.get() would then raise.
        _set_task_join_will_block(False)

    assert not any(thread.is_alive() for thread in threads), f"a posting thread did not finish within {THREAD_TIMEOUT_S} s"
    assert errors == []
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Payment.id))) == PAYERS * ROUNDS
    rerates = db.session.scalar(sa.select(sa.func.count(LedgerEntry.id)).filter_by(company_id=company_id, kind="rerate"))
    assert rerates == RATERS * ROUNDS
    charged = db.session.scalar(
        sa.select(sa.func.count(sa.distinct(LedgerEntry.account_id))).filter_by(company_id=company_id, kind="charge")
    )
    assert charged == ACCOUNTS + ROUNDS

    expected = _ledger_season_figures(company_id, season_id)
    balances = {
        account_id: (receivable, received)
        for account_id, receivable, received in db.session.execute(
            sa.select(AccountSeasonBalance.account_id, AccountSeasonBalance.receivable, AccountSeasonBalance.received)
            .filter_by(company_id=company_id, season_id=season_id)
        )
    }
    assert balances == expected
    total = db.session.execute(
        sa.select(CompanySeasonTotal.receivable, CompanySeasonTotal.received).filter_by(company_id=company_id, season_id=season_id)
    ).one()
    assert total.receivable == sum(receivable for receivable, _ in expected.values())
    assert total.received == sum(capped_received(receivable, received) for receivable, received in expected.values())
    assert total.received == PAYERS * ROUNDS * PAYMENT
    assert [b for b in find_invariant_breaks(company_id, season_id) if b.check == "hq_totals"] == []

"""Receipt numbers: one gapless sequence per company, taken under a row lock."""

import threading
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account
from app.org.models import User
from app.payments.models import Payment, ReceiptCounter
from app.payments.services import PaymentError, amount_owed, collect_payment, local_time
from app.tenancy import SYSTEM_SCOPE, set_scope

THREAD_TIMEOUT_SECONDS = 60


def _first_owing_account(company_id):
    accounts = db.session.scalars(sa.select(Account).filter_by(company_id=company_id).order_by(Account.id).limit(50))
    return next(a for a in accounts if amount_owed(a).total > 0)


def test_receipt_numbers_gapless_per_company(tj_account, cashier, import_fixture, demo):
    import_fixture("QD", "QD-shared.xlsx")
    run_billing("QD", "2025-2026")
    tj = tj_account("TJ-0001031")
    qd = _first_owing_account(demo["QD"].id)
    tj_user, qd_user = cashier("tj_cashier"), cashier("qd_cashier")

    first = collect_payment(tj, "100.00", "cash", tj_user)
    with pytest.raises(PaymentError):
        collect_payment(tj, "999999.00", "cash", tj_user)  # rejected: takes no number
    second = collect_payment(tj, "100.00", "cash", tj_user)
    qd_first = collect_payment(qd, "10.00", "card", qd_user)
    third = collect_payment(tj, "0.01", "cash", tj_user)

    year = local_time(first.paid_at).year
    assert [first.receipt_no, second.receipt_no, third.receipt_no] == [
        f"TJ-{year}-000001",
        f"TJ-{year}-000002",
        f"TJ-{year}-000003",
    ]
    assert qd_first.receipt_no == f"QD-{local_time(qd_first.paid_at).year}-000001"
    counters = dict(db.session.execute(sa.select(ReceiptCounter.company_id, ReceiptCounter.next_number)).all())
    assert counters == {demo["TJ"].id: 4, demo["QD"].id: 2}


def _pay_in_thread(app, account_id, user_id, amount, outcomes):
    with app.app_context():
        set_scope(SYSTEM_SCOPE)
        try:
            account = db.session.get(Account, account_id)
            user = db.session.get(User, user_id)
            outcomes.append(collect_payment(account, amount, "cash", user).receipt_no)
        except PaymentError as error:
            outcomes.append(error)
        finally:
            db.session.remove()


def _run_threads(targets):
    threads = [threading.Thread(target=_pay_in_thread, args=args) for args in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(THREAD_TIMEOUT_SECONDS)
    assert not any(thread.is_alive() for thread in threads), "a payment thread did not finish in time"


def test_concurrent_payments_get_distinct_numbers(backend, app_ctx, tj_billed, cashier):
    if backend != "postgres":
        pytest.skip("SQLite ignores SELECT ... FOR UPDATE; the row lock is exercised on PostgreSQL")
    accounts = db.session.scalars(sa.select(Account).order_by(Account.id).limit(40)).all()
    owing = [a.id for a in accounts if amount_owed(a).total >= Decimal("1.00")][:8]
    user_id = cashier("tj_cashier").id
    db.session.commit()
    outcomes = []

    _run_threads([(app_ctx, account_id, user_id, "1.00", outcomes) for account_id in owing])

    numbers = sorted(int(number.rsplit("-", 1)[1]) for number in outcomes)
    assert numbers == list(range(1, len(owing) + 1))


def test_concurrent_payments_cannot_overpay(backend, app_ctx, tj_account, cashier):
    if backend != "postgres":
        pytest.skip("SQLite ignores SELECT ... FOR UPDATE; the row lock is exercised on PostgreSQL")
    account_id = tj_account("TJ-0001031").id  # owes 5368.43: two payments of 3000.00 cannot both fit
    user_id = cashier("tj_cashier").id
    db.session.commit()
    outcomes = []

    _run_threads([(app_ctx, account_id, user_id, "3000.00", outcomes) for _ in range(2)])

    rejected = [o for o in outcomes if isinstance(o, PaymentError)]
    assert len(outcomes) == 2
    assert len(rejected) == 1
    assert "超过该户应缴合计 2368.43 元" in str(rejected[0])
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Payment)) == 1

"""Failed inbox rows: retried by the sweep with a doubling backoff up to a limit, and requeued by an administrator.

The failure here is an account that the apply task cannot find in the order's company.
The test moves the account to QD and moves it back once the row has failed, as when an
account is restored after a mistaken transfer.
"""

import secrets
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.extensions import db
from app.network.models import Account
from app.payments.inbox import apply_pending, receive_notification, release_due_retries
from app.payments.models import OnlineOrder, Payment, PaymentNotification, utcnow
from app.tasks.payments import sweep_notifications_task
from app.tenancy import SYSTEM_SCOPE, scoped
from wechatpay_helpers import accounts_of, order_notification

pytestmark = pytest.mark.xdist_group("wechatpay")
RETRY_BASE_S = 600.0
ORDER_AMOUNT = Decimal("1234.56")


@pytest.fixture
def retry_settings(app, monkeypatch):
    monkeypatch.setitem(app.config, "NOTIFICATION_RETRY_BASE_S", RETRY_BASE_S)
    monkeypatch.setitem(app.config, "NOTIFICATION_RETRY_CAP_S", 3600.0)
    monkeypatch.setitem(app.config, "NOTIFICATION_RETRY_LIMIT", 3)


def _stored_notification(keys, account):
    """Place an order of ORDER_AMOUNT for `account` and store its verified notification as pending; return (order, transaction id)."""
    order, transaction_id, body, headers = order_notification(keys, account, amount=ORDER_AMOUNT)
    receipt, _ = receive_notification("wechat", headers, body)
    assert receipt.outcome == "pending"
    return order, transaction_id, (body, headers)


def _new_account(company):
    """Add an account with no ledger lines to `company`, in the unit of its first account, so the test can move it."""
    neighbour = accounts_of(company, 1)[0]
    account = Account(
        company_id=company.id, account_no="RETRY" + secrets.token_hex(4), customer_name="重试户", unit_id=neighbour.unit_id,
        room="9901", building_area=Decimal("80.00"), user_type="residential", billing_status="normal",
    )
    db.session.add(account)
    db.session.commit()
    return account


def _move_account(account_id, company_id, account_no):
    with scoped(SYSTEM_SCOPE):
        account = db.session.get(Account, account_id)
        account.company_id = company_id
        account.account_no = account_no
        db.session.commit()


def _row(transaction_id):
    db.session.expire_all()
    return db.session.scalar(
        sa.select(PaymentNotification).filter_by(transaction_id=transaction_id).where(PaymentNotification.delivery_key.is_not(None))
    )


def _balance(account_id):
    """The sum of the account's ledger lines: what it owes, negative for a credit."""
    db.session.expire_all()
    return db.session.scalar(sa.select(sa.func.coalesce(sa.func.sum(LedgerEntry.amount), 0)).filter_by(account_id=account_id))


def _payments(transaction_id):
    db.session.expire_all()
    return db.session.scalars(sa.select(Payment).filter_by(channel_transaction_id=transaction_id)).all()


def _make_due(row_id):
    """Move a failed row's retry time into the past, as if the backoff had passed."""
    db.session.execute(
        sa.update(PaymentNotification).where(PaymentNotification.id == row_id).values(retry_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()


def test_missing_account_applies_once_after_fix(wechat, retry_settings):
    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    # A moved account keeps its ledger lines in its company, so the one moved here has none yet.
    account = _new_account(tj)
    account_id, account_no = account.id, account.account_no
    order, transaction_id, (body, headers) = _stored_notification(wechat["keys"], account)
    _move_account(account_id, qd.id, "MOVED" + secrets.token_hex(4))

    assert apply_pending(tj.id) == 1
    failed = _row(transaction_id)
    assert failed.outcome == "failed"
    assert f"account {account_id} was not found in company {tj.id}" in failed.reason
    assert failed.attempts == 1
    assert failed.payment_id is None
    first_delay = (failed.retry_at - failed.applied_at).total_seconds()
    assert first_delay == pytest.approx(RETRY_BASE_S)
    assert _payments(transaction_id) == []

    # Not due yet: the sweep leaves it failed.
    assert sweep_notifications_task(older_than_seconds=0) == 0
    assert _row(transaction_id).outcome == "failed"

    # Due while the account is still missing: a second failed attempt, twice the delay.
    _make_due(failed.id)
    assert sweep_notifications_task(older_than_seconds=0) == 1
    second = _row(transaction_id)
    assert second.outcome == "failed"
    assert second.attempts == 2
    assert (second.retry_at - second.applied_at).total_seconds() == pytest.approx(2 * RETRY_BASE_S)

    # The account is back; the next due attempt posts the payment.
    _move_account(account_id, tj.id, account_no)
    _make_due(second.id)
    assert sweep_notifications_task(older_than_seconds=0) == 1
    applied = _row(transaction_id)
    assert applied.outcome == "accepted"
    assert applied.retry_at is None
    assert applied.attempts == 2
    payments = _payments(transaction_id)
    assert len(payments) == 1
    assert payments[0].amount == order.amount
    assert applied.payment_id == payments[0].id
    assert db.session.get(OnlineOrder, order.id).status == "paid"
    assert _balance(account_id) == -ORDER_AMOUNT

    # Neither another sweep nor a repeated delivery posts it a second time.
    assert sweep_notifications_task(older_than_seconds=0) == 0
    assert release_due_retries(tj.id, now=utcnow() + timedelta(days=1)) == 0
    receipt, reply = receive_notification("wechat", headers, body)
    assert (receipt.outcome, reply.status) == ("duplicate", 204)
    assert apply_pending(tj.id) == 0
    assert len(_payments(transaction_id)) == 1
    assert _balance(account_id) == -ORDER_AMOUNT


def test_retry_limit_then_admin_requeue(wechat, retry_settings, app):
    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    account = _new_account(tj)
    account_id, account_no = account.id, account.account_no
    order, transaction_id, _ = _stored_notification(wechat["keys"], account)
    _move_account(account_id, qd.id, "MOVED" + secrets.token_hex(4))

    assert apply_pending(tj.id) == 1
    for attempt in (2, 3):
        _make_due(_row(transaction_id).id)
        assert sweep_notifications_task(older_than_seconds=0) == 1
        assert _row(transaction_id).attempts == attempt
    exhausted = _row(transaction_id)
    assert exhausted.outcome == "failed"
    assert exhausted.retry_at is None
    # No retry left: the sweep leaves it alone however late it runs.
    assert release_due_retries(tj.id, now=utcnow() + timedelta(days=30)) == 0
    assert sweep_notifications_task(older_than_seconds=0) == 0

    runner = app.test_cli_runner()
    listed = runner.invoke(args=["heat", "notifications", "failed", "--company", "TJ"])
    assert listed.exit_code == 0
    assert f"{exhausted.id}\tTJ\twechat\t{transaction_id}\tattempts 3\tnext retry none left" in listed.output
    no_reason = runner.invoke(args=["heat", "notifications", "requeue", str(exhausted.id), "--reason", "  "])
    assert no_reason.exit_code == 1
    assert "A reason is required" in no_reason.output

    _move_account(account_id, tj.id, account_no)
    requeued = runner.invoke(args=["heat", "notifications", "requeue", str(exhausted.id), "--reason", "account restored to TJ"])
    assert requeued.exit_code == 0, requeued.output
    assert f"notification {exhausted.id} of TJ is pending again after 3 failed attempts" in requeued.output
    # Tests run Celery eagerly, so the apply task the command sent has run.
    applied = _row(transaction_id)
    assert applied.outcome == "accepted"
    assert applied.requeue_reason == "account restored to TJ"
    assert applied.requeued_at is not None
    assert len(_payments(transaction_id)) == 1

    again = runner.invoke(args=["heat", "notifications", "requeue", str(exhausted.id), "--reason", "once more"])
    assert again.exit_code == 1
    assert f"Notification {exhausted.id} is accepted, not failed" in again.output
    assert len(_payments(transaction_id)) == 1
    unknown = runner.invoke(args=["heat", "notifications", "requeue", "999999", "--reason", "typo"])
    assert unknown.exit_code == 1
    assert "Notification 999999 was not found" in unknown.output

"""A requeue by an administrator racing the beat sweep over one failed notification."""

import threading

import pytest

from app.extensions import db
from app.payments.inbox import apply_pending, requeue_failed
from app.tasks.payments import sweep_notifications_task
from app.tenancy import SYSTEM_SCOPE, set_scope
from tests.integrations.test_notification_retry import (
    ORDER_AMOUNT, _balance, _make_due, _move_account, _new_account, _payments, _row, _stored_notification,
    retry_settings,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.xdist_group("wechatpay")


def test_requeue_racing_sweep_posts_once(wechat, retry_settings, app):  # noqa: F811
    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    account = _new_account(tj)
    account_id, account_no = account.id, account.account_no
    _, transaction_id, _ = _stored_notification(wechat["keys"], account)
    _move_account(account_id, qd.id, "MOVED" + account_no[-8:])
    assert apply_pending(tj.id) == 1
    failed = _row(transaction_id)
    assert failed.outcome == "failed"
    # The account is back and the retry is due, so both the sweep and the requeue may apply it.
    _move_account(account_id, tj.id, account_no)
    _make_due(failed.id)
    barrier = threading.Barrier(2, timeout=30)
    errors = []

    def run(work):
        try:
            with app.app_context():
                set_scope(SYSTEM_SCOPE)
                barrier.wait()
                work()
                db.session.remove()
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    def requeue_and_apply():
        try:
            requeue_failed(failed.id, "account restored to TJ")
        except ValueError:
            # The sweep set it pending first; a requeue of a non-failed row is rejected.
            db.session.rollback()
        apply_pending(tj.id)

    threads = [
        threading.Thread(target=run, args=(requeue_and_apply,)),
        threading.Thread(target=run, args=(lambda: sweep_notifications_task(older_than_seconds=0),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert _row(transaction_id).outcome == "accepted"
    assert len(_payments(transaction_id)) == 1
    assert _balance(account_id) == -ORDER_AMOUNT

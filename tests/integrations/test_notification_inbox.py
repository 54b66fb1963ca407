"""The notification inbox: WeChat Pay notifications stored over HTTP, applied by the Celery task.

Tests run Celery eagerly, so a notification posted to the endpoint is applied within its
request. Calling `receive_notification` alone leaves the state a web process leaves when it
dies after its commit and before it sends the apply task.
"""

import secrets
import threading
import time
from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.models import LedgerEntry
from app.extensions import db
from app.network.models import Account
from app.org.models import Company
from app.payments.inbox import apply_pending, merchant_cache, receive_notification
from app.payments.models import OnlineOrder, Payment, PaymentNotification, ReceiptCounter, WechatMerchant
from app.payments.online import yuan_to_fen
from app.payments.services import amount_owed
from app.tasks.payments import sweep_notifications_task
from app.tenancy import SYSTEM_SCOPE, set_scope
from wechatpay_helpers import SP_MCHID, SUB_MCHIDS, accounts_of, signed_notification

pytestmark = pytest.mark.xdist_group("wechatpay")
NOTIFY_PATH = "/payments/notify/wechat"


def _order(account, sub_mchid=None):
    """A pending order for what `account` owes, under its company's sub-merchant unless another is given."""
    if sub_mchid is None:
        sub_mchid = SUB_MCHIDS[db.session.get(Company, account.company_id).code]
    order = OnlineOrder(
        company_id=account.company_id, account_id=account.id, out_trade_no="T" + secrets.token_hex(12),
        amount=amount_owed(account).total, sub_mchid=sub_mchid,
    )
    db.session.add(order)
    db.session.commit()
    return order


def _notification(keys, order, sub_mchid=None, out_trade_no=None, transaction_id=None, total=None):
    resource = {
        "sp_mchid": SP_MCHID, "sub_mchid": sub_mchid or order.sub_mchid, "out_trade_no": out_trade_no or order.out_trade_no,
        "transaction_id": transaction_id or "42000" + secrets.token_hex(10), "trade_type": "NATIVE",
        "trade_state": "SUCCESS", "attach": "", "success_time": "2026-01-10T10:00:00+08:00",
        "amount": {"total": yuan_to_fen(order.amount) if total is None else total, "currency": "CNY"},
    }
    return signed_notification(keys, resource), resource["transaction_id"]


def _rows(**filters):
    db.session.expire_all()
    return db.session.scalars(sa.select(PaymentNotification).filter_by(**filters).order_by(PaymentNotification.id)).all()


def _payments(transaction_id):
    return db.session.scalars(sa.select(Payment).filter_by(channel_transaction_id=transaction_id)).all()


def test_duplicate_before_apply_stores_once(wechat):
    tj = wechat["demo"]["TJ"]
    account = accounts_of(tj, 1)[0]
    order = _order(account)
    (body, headers), transaction_id = _notification(wechat["keys"], order)

    first, reply = receive_notification("wechat", headers, body)
    assert (first.outcome, reply.status) == ("pending", 204)
    second, reply = receive_notification("wechat", headers, body)
    assert (second.outcome, reply.status) == ("duplicate", 204)
    pending = _rows(outcome="pending")
    assert len(pending) == 1
    assert pending[0].company_id == tj.id
    assert _payments(transaction_id) == []

    assert apply_pending(tj.id) == 1
    assert apply_pending(tj.id) == 0
    payments = _payments(transaction_id)
    assert len(payments) == 1
    assert payments[0].amount == order.amount
    assert Counter(row.outcome for row in _rows(transaction_id=transaction_id)) == {"accepted": 1, "duplicate": 1}
    assert amount_owed(db.session.get(Account, account.id)).total == 0


def test_duplicate_after_apply_changes_nothing(wechat, app_ctx):
    tj = wechat["demo"]["TJ"]
    account = accounts_of(tj, 1)[0]
    order = _order(account)
    (body, headers), transaction_id = _notification(wechat["keys"], order)
    client = app_ctx.test_client()

    assert client.post(NOTIFY_PATH, data=body, headers=headers).status_code == 204
    applied = _rows(outcome="accepted")
    assert len(applied) == 1
    applied_at = applied[0].applied_at
    receipt_no = _payments(transaction_id)[0].receipt_no
    balance = db.session.scalar(sa.select(sa.func.sum(LedgerEntry.amount)).filter_by(account_id=account.id))

    response = client.post(NOTIFY_PATH, data=body, headers=headers)
    assert response.status_code == 204
    assert [p.receipt_no for p in _payments(transaction_id)] == [receipt_no]
    assert db.session.scalar(sa.select(sa.func.sum(LedgerEntry.amount)).filter_by(account_id=account.id)) == balance
    assert _rows(outcome="accepted")[0].applied_at == applied_at
    duplicates = _rows(outcome="duplicate")
    assert len(duplicates) == 1
    assert "already received" in duplicates[0].reason
    assert duplicates[0].delivery_key is None


def test_crash_before_apply_swept_once(wechat):
    tj = wechat["demo"]["TJ"]
    accounts = accounts_of(tj, 2)
    orders = [_order(account) for account in accounts]
    transaction_ids = []
    for order in orders:
        (body, headers), transaction_id = _notification(wechat["keys"], order)
        receipt, _ = receive_notification("wechat", headers, body)
        assert receipt.outcome == "pending"
        transaction_ids.append(transaction_id)

    # Nothing applied them: the rows wait, and the sweep leaves rows younger than its age limit.
    assert len(_rows(outcome="pending")) == 2
    assert sweep_notifications_task(older_than_seconds=3600) == 0
    assert len(_rows(outcome="pending")) == 2

    assert sweep_notifications_task(older_than_seconds=0) == 2
    assert sweep_notifications_task(older_than_seconds=0) == 0
    for order, transaction_id in zip(orders, transaction_ids):
        assert len(_payments(transaction_id)) == 1
        assert db.session.get(OnlineOrder, order.id).status == "paid"
        assert amount_owed(db.session.get(Account, order.account_id)).total == 0
    assert [row.outcome for row in _rows(company_id=tj.id)] == ["accepted", "accepted"]


def test_bad_rows_do_not_stop_batch(wechat):
    tj = wechat["demo"]["TJ"]
    keys = wechat["keys"]
    first, conflicting, held, last = accounts_of(tj, 4)
    orders = {name: _order(account) for name, account in
              (("first", first), ("conflicting", conflicting), ("held", held), ("last", last))}
    stored = {}

    def store(name, **changes):
        (body, headers), transaction_id = _notification(keys, orders.get(name, orders["first"]), **changes)
        receipt, _ = receive_notification("wechat", headers, body)
        assert receipt.outcome == "pending", name
        stored[name] = transaction_id

    store("first")
    store("missing_order", out_trade_no="T-NOT-AN-ORDER")
    store("conflicting")
    store("held", total=1)
    store("last")
    # A ledger line already carries the idempotency key of the conflicting payment's line,
    # so that payment fails at its second INSERT, after its payment row was written.
    season_id = amount_owed(conflicting).current.season.id
    db.session.add(LedgerEntry(
        company_id=tj.id, account_id=first.id, season_id=None, kind="credit", amount=Decimal("0.00"),
        cause_type="manual", idempotency_key=f"wechat:{stored['conflicting']}:{season_id}",
    ))
    db.session.commit()

    assert apply_pending(tj.id, batch_size=10) == 5
    outcomes = {row.transaction_id: row for row in _rows(company_id=tj.id)}
    assert outcomes[stored["first"]].outcome == "accepted"
    assert outcomes[stored["last"]].outcome == "accepted"
    assert outcomes[stored["missing_order"]].outcome == "rejected"
    assert "'T-NOT-AN-ORDER' not found" in outcomes[stored["missing_order"]].reason
    assert outcomes[stored["held"]].outcome == "held"
    assert "differs" in outcomes[stored["held"]].reason
    failed = outcomes[stored["conflicting"]]
    assert failed.outcome == "failed"
    assert "integrity error" in failed.reason
    assert failed.payment_id is None

    # The failed payment left nothing behind, and gave its receipt number to the next one.
    assert _payments(stored["conflicting"]) == []
    assert db.session.get(OnlineOrder, orders["conflicting"].id).status == "pending"
    assert amount_owed(db.session.get(Account, conflicting.id)).total == orders["conflicting"].amount
    receipt_numbers = [_payments(stored[name])[0].receipt_no for name in ("first", "last")]
    assert [number[-6:] for number in receipt_numbers] == ["000001", "000002"]
    assert db.session.scalar(sa.select(ReceiptCounter.next_number).filter_by(company_id=tj.id)) == 3
    assert db.session.get(OnlineOrder, orders["held"].id).status == "held"


def test_routes_tj_and_qd_by_merchant(wechat):
    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    keys = wechat["keys"]
    tj_order = _order(accounts_of(tj, 1)[0])
    qd_order = _order(accounts_of(qd, 1)[0])

    (body, headers), tj_transaction = _notification(keys, tj_order)
    assert receive_notification("wechat", headers, body)[0].company_id == tj.id
    (body, headers), qd_transaction = _notification(keys, qd_order)
    assert receive_notification("wechat", headers, body)[0].company_id == qd.id
    # TJ's sub-merchant naming QD's order is stored for TJ, where no such order exists.
    (body, headers), crossed = _notification(keys, qd_order, sub_mchid=SUB_MCHIDS["TJ"])
    assert receive_notification("wechat", headers, body)[0].company_id == tj.id

    apply_pending(tj.id)
    apply_pending(qd.id)
    assert [p.company_id for p in _payments(tj_transaction)] == [tj.id]
    assert [p.company_id for p in _payments(qd_transaction)] == [qd.id]
    assert _payments(crossed) == []
    rejected, group = _rows(transaction_id=crossed)
    assert (rejected.company_id, rejected.outcome) == (tj.id, "rejected")
    assert "'<order of another company>' not found" in rejected.reason
    assert qd_order.out_trade_no not in rejected.reason
    assert (group.company_id, group.outcome, group.out_trade_no) == (None, "rejected", qd_order.out_trade_no)
    assert f"{qd_order.out_trade_no!r} not found" in group.reason
    assert db.session.get(OnlineOrder, qd_order.id).transaction_id == qd_transaction


def test_cached_route_never_posts_elsewhere(wechat, app, monkeypatch):
    tj, qd = wechat["demo"]["TJ"], wechat["demo"]["QD"]
    keys = wechat["keys"]
    monkeypatch.setitem(app.config, "NOTIFICATION_ROUTE_CACHE_S", 300.0)
    merchant_cache.clear()
    tj_order = _order(accounts_of(tj, 1)[0])
    (body, headers), _ = _notification(keys, tj_order)
    assert receive_notification("wechat", headers, body)[0].company_id == tj.id

    # Another process hands TJ's sub-merchant id to QD: this process's cache still maps it to TJ.
    db.session.execute(sa.delete(WechatMerchant).where(WechatMerchant.company_id == qd.id))
    db.session.execute(sa.update(WechatMerchant).where(WechatMerchant.company_id == tj.id).values(company_id=qd.id))
    db.session.commit()
    qd_order = _order(accounts_of(qd, 1)[0], sub_mchid=SUB_MCHIDS["TJ"])
    (body, headers), stale = _notification(keys, qd_order)
    assert receive_notification("wechat", headers, body)[0].company_id == tj.id
    apply_pending(tj.id)
    assert _payments(stale) == []
    row = _rows(transaction_id=stale)[0]
    assert (row.company_id, row.outcome) == (tj.id, "rejected")
    # The order is QD's, so TJ's row never showed its number; headquarters has the full copy.
    assert "'<order of another company>' not found" in row.reason
    assert qd_order.out_trade_no not in row.reason
    assert row.out_trade_no is None

    # A change flushed in this process empties the cache at once.
    merchant = db.session.scalar(sa.select(WechatMerchant).filter_by(sub_mchid=SUB_MCHIDS["TJ"]))
    merchant.sub_mchid = SUB_MCHIDS["QD"]
    db.session.commit()
    merchant.sub_mchid = SUB_MCHIDS["TJ"]
    db.session.commit()
    (body, headers), fresh = _notification(keys, qd_order)
    assert receive_notification("wechat", headers, body)[0].company_id == qd.id
    apply_pending(qd.id)
    assert [p.company_id for p in _payments(fresh)] == [qd.id]
    merchant_cache.clear()


def test_two_drains_never_double_post(wechat, app, backend, owner_engine):
    if backend != "postgres":
        pytest.skip("SQLite applies one batch at a time; SKIP LOCKED needs PostgreSQL")
    tj = wechat["demo"]["TJ"]
    accounts = accounts_of(tj, 20)
    assert len(accounts) == 20
    orders = [_order(account) for account in accounts]
    transactions = []
    for order in orders:
        (body, headers), transaction_id = _notification(wechat["keys"], order)
        assert receive_notification("wechat", headers, body)[0].outcome == "pending"
        transactions.append(transaction_id)
    db.session.add(ReceiptCounter(company_id=tj.id, next_number=1))
    db.session.commit()

    applied = {}
    errors = []

    def drain(name):
        try:
            with app.app_context():
                set_scope(SYSTEM_SCOPE)
                applied[name] = apply_pending(tj.id, batch_size=5)
                db.session.remove()
        except Exception as error:  # reported by the assertion below
            errors.append(error)

    # The counter row is held, so each drain stops on it with its first batch locked, and
    # the second drain has to skip the first one's rows. Only the drains wait for a lock here.
    with owner_engine.connect() as blocker:
        blocker.begin()
        blocker.execute(sa.text("SELECT 1 FROM receipt_counter WHERE company_id = :c FOR UPDATE"), {"c": tj.id})
        threads = [threading.Thread(target=drain, args=(name,)) for name in ("one", "two")]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        waiting = 0
        while waiting < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            waiting = blocker.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )).scalar()
        blocker.rollback()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == []
    assert waiting == 2

    assert applied["one"] >= 5
    assert applied["two"] >= 5
    assert applied["one"] + applied["two"] == 20
    db.session.expire_all()
    payments = db.session.scalars(sa.select(Payment).filter_by(company_id=tj.id, channel="wechat")).all()
    assert Counter(p.channel_transaction_id for p in payments) == Counter(transactions)
    assert sorted(p.receipt_no[-6:] for p in payments) == [f"{n:06d}" for n in range(1, 21)]
    assert Counter(row.outcome for row in _rows(company_id=tj.id)) == {"accepted": 20}
    for order in orders:
        assert amount_owed(db.session.get(Account, order.account_id)).total == 0

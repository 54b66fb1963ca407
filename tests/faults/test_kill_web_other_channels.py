"""SIGKILL in the middle of Alipay notifications and bank collection requests. The Celery
worker applying stored Alipay notifications is killed, as test_kill_worker_during_notifications.py
does for WeChat Pay, and the sweep applies them. The web process is killed during bank
requests, which it posts itself, and the bank resends a request under the same serial after
a timeout. Each payment is posted exactly once and receipt numbers stay gapless."""

import threading
from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.integrations import bank
from app.network.models import Account
from app.payments.models import AlipayApp, BankAgreement, OnlineOrder, Payment, PaymentNotification, ReceiptCounter
from app.payments.online import create_online_order
from app.payments.services import amount_owed
from app.tasks.payments import sweep_notifications_task
from tests.faults.conftest import WAIT_S, backends_of, free_port, wait_until
from tools.alipay_simulator import Simulator as AlipaySimulator
from tools.bank_simulator import BankSimulator

pytestmark = pytest.mark.faults
ORDERS = 8
ALIPAY_APP_ID = "2021000000000101"
BANK_CODE = "CEB"
BANK_COMPANY_ID = "TJ0001"
BANK_KEY = b"0123456789abcdef0123456789abcdef-test-only"


def _key_pair(directory, name):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_file, public_file = directory / f"{name}.pem", directory / f"{name}_public.pem"
    private_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public_file.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, private_file, public_file


@pytest.fixture
def tj_billed(pg_app, import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    db.session.commit()
    tj = demo["TJ"]
    accounts = db.session.scalars(
        sa.select(Account).filter_by(company_id=tj.id, billing_status="normal").order_by(Account.id).limit(2 * ORDERS)
    ).all()
    accounts = [a for a in accounts if amount_owed(a).total > 0][:ORDERS]
    assert len(accounts) == ORDERS
    return tj, accounts


def _hold_receipt_counter(blocker, company_id):
    """Lock the company's receipt counter: each payment then stops inside its transaction,
    after it locked its order or account and before its payment row."""
    blocker.begin()
    blocker.execute(sa.select(ReceiptCounter).where(ReceiptCounter.company_id == company_id).with_for_update())


def _waiting(blocker, application_name):
    with blocker.engine.connect() as probe:
        return probe.scalar(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND wait_event_type = 'Lock'"
        ), {"name": application_name})


def _kill_while_waiting(processes, blocker, process, application_name, count):
    wait_until(lambda: _waiting(blocker, application_name) == count)
    processes.kill(process)
    blocker.rollback()
    wait_until(lambda: backends_of(blocker, application_name) == 0)


def _assert_paid_once(company_id, accounts, owed, transaction_ids):
    db.session.rollback()
    payments = db.session.scalars(sa.select(Payment).filter_by(company_id=company_id).order_by(Payment.receipt_no)).all()
    assert Counter(p.channel_transaction_id for p in payments) == Counter(transaction_ids)
    # The killed transactions gave their receipt numbers back.
    assert [p.receipt_no[-6:] for p in payments] == [f"{n:06d}" for n in range(1, len(accounts) + 1)]
    for account in accounts:
        assert amount_owed(db.session.get(Account, account.id)).total == 0
        paid = db.session.scalar(
            sa.select(sa.func.sum(LedgerEntry.amount)).filter_by(account_id=account.id).where(LedgerEntry.kind.in_(("payment", "credit")))
        )
        assert -paid == owed[account.id]
    assert sum(p.amount for p in payments) == sum(owed.values(), Decimal("0"))
    return payments


@pytest.mark.slow
def test_killed_worker_posts_each_alipay_payment_once(tj_billed, pg_app, processes, blocker, tmp_path, monkeypatch):
    tj, accounts = tj_billed
    app_key, app_private, app_public = _key_pair(tmp_path, "tj_app")
    alipay_key, _, alipay_public = _key_pair(tmp_path, "alipay")
    # Resends 100 times faster than Alipay: 2.4 s, 6 s, 6 s, 36 s … after the first send.
    simulator = AlipaySimulator(
        app_public_keys={ALIPAY_APP_ID: app_key.public_key()}, alipay_private_key=alipay_key, time_scale=100.0, max_attempts=8,
    )
    gateway = simulator.start(0)
    port = free_port()
    settings = {
        "ALIPAY_GATEWAY": gateway, "ALIPAY_NOTIFY_URL": f"http://127.0.0.1:{port}/payments/notify/alipay",
    }
    key_files = f"{app_private}|{alipay_public}"
    for name, value in settings.items():
        monkeypatch.setitem(pg_app.config, name, value)
    monkeypatch.setitem(pg_app.config, "ALIPAY_APP_KEY_FILES", {ALIPAY_APP_ID: key_files})
    env = {f"HEATFLOW_{name}": value for name, value in settings.items()}
    env["HEATFLOW_ALIPAY_APP_KEY_FILES"] = f"{ALIPAY_APP_ID}={key_files}"
    db.session.add(AlipayApp(company_id=tj.id, app_id=ALIPAY_APP_ID, mode="direct"))
    db.session.commit()
    try:
        owed = {a.id: amount_owed(a).total for a in accounts}
        orders = [create_online_order(account, "alipay") for account in accounts]
        processes.web("fault_alipay_web", port, **env)
        worker = processes.celery_worker("fault_alipay_worker", f"sqla+sqlite:///{tmp_path / 'celery-broker.db'}", **env)

        def delivered(trade_nos):
            ok = {d["trade_no"] for d in list(simulator.deliveries) if d["reply"] == b"success"}
            return set(trade_nos) <= ok

        def paid_count():
            db.session.rollback()
            return db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(company_id=tj.id))

        first = [simulator.pay(ALIPAY_APP_ID, order.out_trade_no) for order in orders[: ORDERS // 2]]
        wait_until(lambda: delivered(first))
        wait_until(lambda: paid_count() == len(first))

        # The web accepts the second half without the receipt counter; the worker stops on it.
        _hold_receipt_counter(blocker, tj.id)
        second = [simulator.pay(ALIPAY_APP_ID, order.out_trade_no) for order in orders[ORDERS // 2:]]
        wait_until(lambda: delivered(second))
        _kill_while_waiting(processes, blocker, worker, "fault_alipay_worker", 1)
        assert paid_count() == len(first)

        # Celery beat's sweep, run here, applies what the killed worker left.
        assert sweep_notifications_task(older_than_seconds=0) == len(second)
    finally:
        simulator.stop()

    _assert_paid_once(tj.id, accounts, owed, first + second)
    for order in orders:
        db.session.refresh(order)
        assert order.status == "paid"
    assert db.session.scalar(sa.select(sa.func.count(OnlineOrder.id)).filter_by(status="paid")) == ORDERS
    accepted = Counter(
        t for t, o in db.session.execute(sa.select(PaymentNotification.transaction_id, PaymentNotification.outcome)) if o == "accepted"
    )
    assert set(accepted.values()) == {1}
    assert len(accepted) == ORDERS


def test_killed_web_posts_each_bank_payment_once(tj_billed, processes, blocker, tmp_path):
    tj, accounts = tj_billed
    key_file = tmp_path / "bank.key"
    key_file.write_bytes(BANK_KEY + b"\n")
    db.session.add(BankAgreement(company_id=tj.id, bank_code=BANK_CODE, bank_company_id=BANK_COMPANY_ID))
    db.session.commit()
    owed = {a.id: amount_owed(a).total for a in accounts}
    port = free_port()
    env = {"HEATFLOW_BANK_KEY_FILES": f"{BANK_CODE}={key_file}"}
    web = processes.web("fault_bank_web", port, **env)
    simulator = BankSimulator(f"http://127.0.0.1:{port}", BANK_CODE, BANK_KEY, BANK_COMPANY_ID)
    messages = [
        simulator.message("pay", BillKey=a.account_no, PayAmount=f"{owed[a.id]:.2f}", SubChannel="counter") for a in accounts
    ]

    for message in messages[: ORDERS // 2]:
        status, reply, valid = simulator.send(message)
        assert (status, valid, reply["RespCode"]) == (200, True, bank.OK)

    _hold_receipt_counter(blocker, tj.id)
    cut_off = []

    def send(message):
        # The bank's request dies with the web process; the bank books it as unanswered.
        try:
            cut_off.append(simulator.send(message)[0])
        except OSError as error:
            cut_off.append(type(error).__name__)

    threads = [threading.Thread(target=send, args=(message,)) for message in messages[ORDERS // 2:]]
    for thread in threads:
        thread.start()
    _kill_while_waiting(processes, blocker, web, "fault_bank_web", len(threads))
    for thread in threads:
        thread.join(timeout=WAIT_S)
    assert len(cut_off) == len(threads)
    assert 200 not in cut_off
    db.session.rollback()
    assert db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(company_id=tj.id)) == ORDERS // 2

    # The bank resends every request under its serial, the answered ones included.
    processes.web("fault_bank_web_restarted", port, **env)
    receipts = {}
    for message in messages:
        status, reply, valid = simulator.send(message)
        assert (status, valid, reply["RespCode"]) == (200, True, bank.OK), reply
        receipts[f"{message['TranDate']}:{message['TranSeq']}"] = reply["ReceiptNo"]

    # The bank's transaction id is its trade date and serial.
    payments = _assert_paid_once(tj.id, accounts, owed, list(receipts))
    assert {p.channel_transaction_id: p.receipt_no for p in payments} == receipts

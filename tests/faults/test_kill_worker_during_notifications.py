"""SIGKILL of the Celery worker while it applies stored WeChat Pay notifications: the web
process has already accepted them, and the sweep applies each one exactly once."""

from collections import Counter
from decimal import Decimal

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.billing.models import LedgerEntry
from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account
from app.payments.models import (
    OnlineOrder,
    Payment,
    PaymentNotification,
    ReceiptCounter,
    WechatMerchant,
)
from app.payments.online import create_wechat_order
from app.payments.services import amount_owed
from app.tasks.payments import sweep_notifications_task
from tests.faults.conftest import WAIT_S, backends_of, free_port, wait_until
from tools.wechatpay_simulator import Simulator

pytestmark = pytest.mark.faults
SP_MCHID = "1900000100"
SUB_MCHID = "1900000111"
MERCHANT_SERIAL = "3775B6A45ACD588826D15E583A95F5DD2C9F0001"
PLATFORM_SERIAL = "PUB_KEY_ID_0119000001002024000000000000000001"
ORDERS = 12


def _key_files(directory):
    files = {}
    for name in ("merchant", "platform"):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        (directory / f"{name}.pem").write_bytes(
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        (directory / f"{name}_public.pem").write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        files[name] = key
    (directory / "apiv3.key").write_text("0123456789abcdefghijklmnopqrstuv")
    return files


@pytest.fixture
def wechat_world(pg_app, import_fixture, demo, tmp_path, monkeypatch):
    """TJ billed with a sub-merchant, the simulator running, and the settings both for this process and the web's environment."""
    keys = _key_files(tmp_path)
    # Retries 100 times faster than the channel: 0.15 s, 0.15 s, 0.3 s, 1.8 s, 6 s, 12 s, 18 s …
    simulator = Simulator(
        merchant_public_keys={SP_MCHID: keys["merchant"].public_key()}, platform_private_key=keys["platform"],
        platform_serial=PLATFORM_SERIAL, apiv3_key=(tmp_path / "apiv3.key").read_bytes(), time_scale=100.0, max_attempts=10,
    )
    base_url = simulator.start(0)
    port = free_port()
    settings = {
        "WECHATPAY_API_BASE": base_url, "WECHATPAY_SP_MCHID": SP_MCHID, "WECHATPAY_SP_APPID": "wx0000000000000001",
        "WECHATPAY_MERCHANT_SERIAL": MERCHANT_SERIAL, "WECHATPAY_MERCHANT_KEY_FILE": str(tmp_path / "merchant.pem"),
        "WECHATPAY_APIV3_KEY_FILE": str(tmp_path / "apiv3.key"),
        "WECHATPAY_NOTIFY_URL": f"http://127.0.0.1:{port}/payments/notify/wechat",
    }
    for name, value in settings.items():
        monkeypatch.setitem(pg_app.config, name, value)
    monkeypatch.setitem(pg_app.config, "WECHATPAY_PLATFORM_KEY_FILES", {PLATFORM_SERIAL: str(tmp_path / "platform_public.pem")})
    env = {f"HEATFLOW_{name}": value for name, value in settings.items()}
    env["HEATFLOW_WECHATPAY_PLATFORM_KEY_FILES"] = f"{PLATFORM_SERIAL}={tmp_path / 'platform_public.pem'}"
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    db.session.add(WechatMerchant(company_id=demo["TJ"].id, sub_mchid=SUB_MCHID))
    db.session.commit()
    yield {"simulator": simulator, "port": port, "env": env, "tj": demo["TJ"]}
    simulator.stop()


def _delivered(simulator, transaction_ids):
    ok = {d["transaction_id"] for d in list(simulator.deliveries) if d["status"] is not None and 200 <= d["status"] < 300}
    return set(transaction_ids) <= ok


def _waiting_for_lock(blocker, application_name):
    with blocker.engine.connect() as probe:
        return probe.scalar(sa.text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name AND wait_event_type = 'Lock'"
        ), {"name": application_name})


@pytest.mark.slow
def test_killed_worker_posts_each_payment_once(wechat_world, processes, blocker, tmp_path):
    simulator, port, env, tj = (wechat_world[k] for k in ("simulator", "port", "env", "tj"))
    accounts = db.session.scalars(
        sa.select(Account).filter_by(company_id=tj.id, billing_status="normal").order_by(Account.id).limit(ORDERS)
    ).all()
    owed = {a.id: amount_owed(a).total for a in accounts}
    assert all(amount > 0 for amount in owed.values())
    orders = [create_wechat_order(account) for account in accounts]
    processes.web("fault_web", port, **env)
    worker = processes.celery_worker("fault_worker", f"sqla+sqlite:///{tmp_path / 'celery-broker.db'}", **env)

    def paid_count():
        db.session.rollback()
        return db.session.scalar(sa.select(sa.func.count(Payment.id)).filter_by(company_id=tj.id))

    # The first half is accepted, then applied by the worker as usual.
    first = [simulator.pay(SUB_MCHID, order.out_trade_no) for order in orders[: ORDERS // 2]]
    wait_until(lambda: _delivered(simulator, first))
    wait_until(lambda: paid_count() == len(first), timeout_s=WAIT_S)

    # With the receipt counter locked, the web still accepts the second half, and the worker
    # stops inside its batch transaction, after it locked the rows, order and account.
    blocker.begin()
    blocker.execute(sa.select(ReceiptCounter).where(ReceiptCounter.company_id == tj.id).with_for_update())
    second = [simulator.pay(SUB_MCHID, order.out_trade_no) for order in orders[ORDERS // 2:]]
    wait_until(lambda: _delivered(simulator, second))
    wait_until(lambda: _waiting_for_lock(blocker, "fault_worker") == 1)
    processes.kill(worker)
    blocker.rollback()
    wait_until(lambda: backends_of(blocker, "fault_worker") == 0)
    assert paid_count() == len(first)
    pending = db.session.scalar(sa.select(sa.func.count(PaymentNotification.id)).filter_by(outcome="pending"))
    assert pending == len(second)

    # Celery beat's sweep, run here, applies what the killed worker left; a second run finds nothing.
    assert sweep_notifications_task(older_than_seconds=0) == len(second)
    assert sweep_notifications_task(older_than_seconds=0) == 0

    db.session.rollback()
    payments = db.session.scalars(sa.select(Payment).filter_by(company_id=tj.id).order_by(Payment.receipt_no)).all()
    assert Counter(p.channel_transaction_id for p in payments) == Counter(first + second)
    # Receipt numbers stay gapless: the killed transaction gave its block back.
    assert [p.receipt_no[-6:] for p in payments] == [f"{n:06d}" for n in range(1, ORDERS + 1)]
    for order in orders:
        db.session.refresh(order)
        assert order.status == "paid"
    for account in accounts:
        assert amount_owed(db.session.get(Account, account.id)).total == 0
        paid = db.session.scalar(
            sa.select(sa.func.sum(LedgerEntry.amount)).filter_by(account_id=account.id).where(LedgerEntry.kind.in_(("payment", "credit")))
        )
        assert -paid == owed[account.id]
    outcomes = Counter(
        (t, o) for t, o in db.session.execute(sa.select(PaymentNotification.transaction_id, PaymentNotification.outcome))
        if o == "accepted"
    )
    assert set(outcomes.values()) == {1}
    assert len(outcomes) == ORDERS
    assert db.session.scalar(sa.select(sa.func.count(OnlineOrder.id)).filter_by(status="paid")) == ORDERS
    assert sum(p.amount for p in payments) == sum(owed.values(), Decimal("0"))

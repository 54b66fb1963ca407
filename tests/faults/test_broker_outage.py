"""RabbitMQ unreachable for OUTAGE_S seconds: the web process, a Celery worker and its beat
reach the broker through a TCP proxy that the test cuts. Work done during the cut (a ledger
upload that queues a task, counter payments spread over the whole cut that write outbox
events and queue their e-invoice) is neither refused nor lost, all of it arrives once the
path returns, and none of it is applied twice.

HEATFLOW_FAULT_BROKER_OUTAGE_S sets the length of the cut in seconds (default 120, at
least 3 so that payments fall inside it)."""

import os
import time
from collections import Counter

import pytest
import sqlalchemy as sa
from kombu import Connection

from app.billing.services import run_billing
from app.extensions import db
from app.invoicing.models import Invoice
from app.ledger.models import LedgerImport
from app.messaging.broker import EVENTS_EXCHANGE, declare_consumer_queue
from app.messaging.models import OutboxEvent
from app.messaging.relay import BATCH_SIZE as RELAY_BATCH_SIZE
from app.network.models import Account
from app.payments.models import Payment
from tests.conftest import LEDGERS
from tests.faults.conftest import Browser, free_port, wait_until
from tests.messaging.conftest import TcpProxy, drain

pytestmark = pytest.mark.faults
OUTAGE_S = max(3, int(os.environ.get("HEATFLOW_FAULT_BROKER_OUTAGE_S", "120")))
PAYMENTS = 4
SUBSCRIBER = "fault.subscriber"


@pytest.mark.slow
def test_broker_outage_loses_no_work(import_fixture, demo, processes, rabbit_vhost):
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    accounts = db.session.scalars(
        sa.select(Account.id).filter_by(company_id=demo["TJ"].id, billing_status="normal").order_by(Account.id).limit(PAYMENTS)
    ).all()
    # Events of the billing run above are pending too; the subscriber must get them all.
    db.session.commit()
    with Connection(rabbit_vhost) as connection:
        declare_consumer_queue(connection, SUBSCRIBER, EVENTS_EXCHANGE, ("#",))

    proxy = TcpProxy()
    vhost = rabbit_vhost.rsplit("/", 1)[1]
    via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}"
    env = {
        "CELERY_BROKER_URL": via_proxy, "HEATFLOW_OUTBOX_BROKER_URL": via_proxy,
        "HEATFLOW_OUTBOX_RELAY_INTERVAL_S": "1", "HEATFLOW_LEDGER_IMPORT_SWEEP_S": "3",
        "HEATFLOW_EINVOICE_SWEEP_S": "3",
    }
    try:
        worker = processes.start(
            "fault_broker_worker",
            ["celery", "-A", "app.celery_worker", "worker", "--beat", "--schedule", str(processes.tmp_path / "beat-schedule"),
             "--pool", "solo", "--loglevel", "INFO"],
            **env,
        )
        port = free_port()
        web = processes.web("fault_broker_web", port, **env)
        wait_until(lambda: _unpublished() == 0)

        proxy.cut()
        cut_at = time.monotonic()
        clerk = Browser(f"http://127.0.0.1:{port}").login("tj_clerk")
        status, _ = clerk.request(
            "/ledger/", {"csrf_token": clerk.token("/ledger/")}, files={"file": ("TJ-again.xlsx", (LEDGERS / "TJ-shared.xlsx").read_bytes())},
        )
        # The upload is stored and the clerk sent on to its status page, not shown an error.
        assert status == 302
        cashier = Browser(f"http://127.0.0.1:{port}").login("tj_cashier")
        for number, account_id in enumerate(accounts):
            # Payments are spread over the cut, so events and tasks keep arriving while the
            # relay and the web process have been failing for minutes.
            time.sleep(max(0.0, cut_at + number * (OUTAGE_S - 2) / len(accounts) - time.monotonic()))
            assert proxy.is_cut
            path = f"/payments/accounts/{account_id}"
            form = {"amount": "10.00", "method": "cash", "csrf_token": cashier.token(path), "request_token": f"outage-{number}"}
            assert cashier.request(path, form)[0] == 302
        db.session.rollback()
        job_id = db.session.scalar(sa.select(sa.func.max(LedgerImport.id)))
        assert _unpublished() >= len(accounts)
        # TJ issues e-invoices: each payment's invoice is stored as pending although its task could not be sent.
        assert _invoice_statuses() == ["pending"] * len(accounts)

        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        db.session.rollback()
        assert db.session.get(LedgerImport, job_id).status == "queued"
        assert _unpublished() >= len(accounts)
        proxy.restore()

        def imported():
            db.session.rollback()
            return db.session.get(LedgerImport, job_id).status in ("succeeded", "rejected", "failed")

        wait_until(imported)
        wait_until(lambda: _unpublished() == 0)
        wait_until(lambda: "pending" not in _invoice_statuses())
        assert worker.poll() is None
        assert web.poll() is None
    finally:
        proxy.close()

    db.session.rollback()
    job = db.session.get(LedgerImport, job_id)
    assert (job.status, job.unchanged_count) == ("succeeded", 1743), processes.logs()
    # Every stored event reached the subscriber; a publish whose confirm the cut swallowed may arrive twice.
    stored = set(db.session.scalars(sa.select(OutboxEvent.event_id)))
    received = [m[0] for m in drain(rabbit_vhost, SUBSCRIBER)]
    assert set(received) == stored
    assert len(stored) >= 1662 + len(accounts)
    # A subscriber applies an event once by its id. Copies come only from a batch whose
    # confirms the cut swallowed, and one relay has at most one batch in flight.
    copies = sum(count - 1 for count in Counter(received).values())
    assert copies <= RELAY_BATCH_SIZE, copies
    payments = [e for e in db.session.scalars(sa.select(OutboxEvent).filter_by(event_type="payment.posted"))]
    assert len(payments) == len(accounts)
    assert len({e.key for e in payments}) == len(accounts)
    # Each payment was posted once, with gapless receipt numbers.
    receipts = db.session.scalars(sa.select(Payment.receipt_no).order_by(Payment.receipt_no)).all()
    assert [r[-6:] for r in receipts] == [f"{n:06d}" for n in range(1, len(accounts) + 1)]
    # The sweep sent the lost invoice tasks. No vendor is configured here, so each ends
    # failed with that reason and is listed for a retry; none is left pending unseen.
    assert _invoice_statuses() == ["failed"] * len(accounts)


def _invoice_statuses():
    db.session.rollback()
    return list(db.session.scalars(sa.select(Invoice.status).where(Invoice.medium == "electronic").order_by(Invoice.id)))


def _unpublished():
    db.session.rollback()
    return db.session.scalar(sa.select(sa.func.count(OutboxEvent.id)).where(OutboxEvent.published_at.is_(None)))

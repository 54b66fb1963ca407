"""The e-invoice task on a real Celery worker and RabbitMQ: retries with backoff while the vendor is slow."""

import time

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.invoicing.models import Invoice
from app.payments.services import collect_payment
from tests.core.test_celery_broker import broker_url, embedded_worker  # noqa: F401  (fixture)


@pytest.mark.parametrize("broker_url", ["amqp"], indirect=True)
def test_slow_vendor_polled_by_worker(einvoicing, make_account, staff, app, monkeypatch, broker_url):
    # The vendor reports "in progress" for 3 s, and the worker polls again with backoff from a
    # 0.2 s base until it finds the invoice issued.
    monkeypatch.setitem(app.config, "EINVOICE_RETRY_BASE_SECONDS", 0.2)
    einvoicing.delay_seconds = 3.0
    account = make_account("TJ", "87.35")
    with embedded_worker(broker_url):
        started = time.monotonic()
        payment = collect_payment(account, "2183.75", "cash", staff("tj_cashier"))
        # The payment is committed at once; the vendor call happens on the worker.
        assert time.monotonic() - started < 1.0
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and status != "issued":
            time.sleep(0.2)
            db.session.expire_all()
            status = db.session.scalar(sa.select(Invoice.status).filter_by(payment_id=payment.id))

    invoice = db.session.scalar(sa.select(Invoice).filter_by(payment_id=payment.id))
    assert invoice.status == "issued", f"after {invoice.attempts} steps: {invoice.last_error}"
    # The first run only submits, so the invoice was issued by a retried run of the task.
    assert invoice.attempts >= 2
    assert invoice.pdf.startswith(b"%PDF")

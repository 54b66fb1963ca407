"""E-invoice tasks on a real Celery worker and RabbitMQ: retries with backoff while the vendor is slow,
and the red invoice of a refund made after the refund has returned."""

import time
from decimal import Decimal

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


@pytest.mark.parametrize("broker_url", ["amqp"], indirect=True)
def test_refund_red_invoice_made_by_worker(einvoicing, make_account, staff, broker_url):
    # 87.35 m² × 25.00 = 2183.75 paid and invoiced; a 500.00 refund returns at once, and the
    # worker then issues a red invoice of −500.00 against the blue one.
    from app.payments.refunds import request_refund

    account = make_account("TJ", "87.35")
    with embedded_worker(broker_url):
        payment = collect_payment(account, "2183.75", "cash", staff("tj_cashier"))
        blue = _wait_for(lambda: db.session.scalar(sa.select(Invoice).filter_by(payment_id=payment.id, direction="blue", status="issued")))
        started = time.monotonic()
        refund = request_refund(payment.id, "500.00", "面积核减", staff("tj_cashier"))
        assert time.monotonic() - started < 1.0
        assert refund.status == "succeeded"
        red = _wait_for(lambda: db.session.scalar(sa.select(Invoice).filter_by(payment_id=payment.id, direction="red", status="issued")))

    assert red.original_id == blue.id
    assert red.cause_id == refund.id
    assert red.amount == Decimal("-500.00")
    assert einvoicing.orders[red.order_no]["order"]["invoiceNum"] == blue.invoice_number


def _wait_for(query, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        db.session.expire_all()
        found = query()
        if found is not None:
            return found
        time.sleep(0.2)
    raise AssertionError(f"nothing found within {seconds} s")

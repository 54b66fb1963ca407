"""Invoices of payments refunded in steps: live blue minus live red equals what the payment keeps."""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.invoicing.issuing import InvoiceError, record_paper_invoice, season_invoiced, void_paper_invoice
from app.invoicing.models import Invoice
from app.payments.refunds import request_refund
from app.payments.services import collect_payment
from app.tariffs.services import get_season
from app.tasks.invoicing import reverse_refunds_task
from tests.invoicing.test_red_invoices import account_receivable

D = Decimal


def _refund(payment, amount, staff):
    refund = request_refund(payment.id, amount, "面积核减", staff("qd_cashier"))
    assert refund.status == "succeeded"
    assert reverse_refunds_task(older_than_seconds=0) == 1
    return refund


def _red_invoices():
    db.session.expire_all()
    return db.session.scalars(sa.select(Invoice).where(Invoice.direction == "red").order_by(Invoice.id)).all()


def test_blue_with_issued_red_not_voided(make_account, staff):
    # QD prints paper invoices. A 100.00 refund of the fully paid season is reversed by a
    # recorded red invoice, so blue minus red states owed − 100.00. Voiding the blue one and
    # printing a new blue one (which leaves the refund out) would subtract the refund twice.
    account = make_account("QD", "80.00")
    season = get_season(account.company_id, "2025-2026")
    owed = account_receivable(account)
    cashier = staff("qd_cashier")
    payment = collect_payment(account, str(owed), "cash", cashier)
    blue = record_paper_invoice(payment, "3700221130", "00012345", cashier)
    _refund(payment, "100.00", staff)
    [red] = _red_invoices()
    record_paper_invoice(payment, "3700221130", "00012346", cashier, invoice=red)

    with pytest.raises(InvoiceError) as raised:
        void_paper_invoice(blue, "交款人要求更改抬头", cashier)

    assert str(raised.value) == (
        "发票 3700221130 00012345 已被红字发票 3700221130 00012346 冲减，不能作废；"
        "请保留原发票：它与红字发票一起列明了退费后实收的金额。"
    )
    db.session.expire_all()
    assert db.session.get(Invoice, blue.id).status == "issued"
    assert season_invoiced(account.id, season.id) == owed - D("100.00")
    with pytest.raises(InvoiceError):
        record_paper_invoice(payment, "3700221130", "00012347", cashier)
    assert season_invoiced(account.id, season.id) == owed - D("100.00")


def test_refunds_in_steps_then_full(make_account, staff):
    # Three refunds of 100.00, 0.01 and 250.00, then one of all that is left. After each,
    # blue minus red equals what the payment keeps, to the fen; after the last it is 0.00.
    account = make_account("QD", "80.00")
    season = get_season(account.company_id, "2025-2026")
    owed = account_receivable(account)
    cashier = staff("qd_cashier")
    payment = collect_payment(account, str(owed), "cash", cashier)
    blue = record_paper_invoice(payment, "3700221130", "00012345", cashier)
    refunded = D("0.00")

    for amount in (D("100.00"), D("0.01"), D("250.00"), owed - D("350.01")):
        _refund(payment, str(amount), staff)
        refunded += amount
        reds = _red_invoices()
        assert reds[-1].amount == -amount
        assert blue.amount + sum(red.amount for red in reds) == owed - refunded
        assert season_invoiced(account.id, season.id) == owed - refunded

    assert season_invoiced(account.id, season.id) == D("0.00")
    assert sum(red.tax_amount for red in _red_invoices()) == -blue.tax_amount

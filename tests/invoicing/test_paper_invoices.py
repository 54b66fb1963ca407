"""Paper tax invoices (QD): the cashier records code and number after printing, and voids with a reason."""

from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.invoicing.issuing import InvoiceError, record_paper_invoice, void_paper_invoice
from app.invoicing.models import Invoice
from app.payments.services import collect_payment


@pytest.fixture
def qd_payment(make_account, staff):
    """A QD residential payment of 1000.00 (QD is in paper-invoice mode)."""

    def _pay(amount="1000.00", user_type="residential"):
        account = make_account("QD", "80.00", user_type=user_type)
        return collect_payment(account, amount, "cash", staff("qd_cashier"))

    return _pay


def test_record_paper_invoice(qd_payment, staff):
    payment = qd_payment()
    invoice = record_paper_invoice(payment, "3700221130", "00012345", staff("qd_cashier"))
    assert invoice.status == "issued"
    assert invoice.medium == "paper"
    assert invoice.invoice_code == "3700221130"
    assert invoice.invoice_number == "00012345"
    assert invoice.amount == Decimal("1000.00")
    assert invoice.tax_amount == Decimal("0.00")
    assert invoice.recorded_by.username == "qd_cashier"


def test_full_width_digits_accepted(qd_payment, staff):
    payment = qd_payment()
    invoice = record_paper_invoice(payment, "０３７００２２１１３０１", "１２３４５６７８", staff("qd_cashier"))
    assert invoice.invoice_code == "037002211301"
    assert invoice.invoice_number == "12345678"


@pytest.mark.parametrize(
    ("code", "number", "message"),
    [
        ("370022113", "00012345", "须为 10 位或 12 位数字"),
        ("37002211300", "00012345", "须为 10 位或 12 位数字"),
        ("3700221130", "1234567", "须为 8 位数字"),
        ("3700221130", "1234567A", "须为 8 位数字"),
        ("", "00012345", "请填写发票代码"),
    ],
)
def test_bad_code_or_number_rejected(qd_payment, staff, code, number, message):
    payment = qd_payment()
    with pytest.raises(InvoiceError, match=message):
        record_paper_invoice(payment, code, number, staff("qd_cashier"))
    assert db.session.scalar(sa.select(sa.func.count(Invoice.id))) == 0


def test_duplicate_number_rejected(qd_payment, staff):
    first, second = qd_payment(), qd_payment()
    record_paper_invoice(first, "3700221130", "00012345", staff("qd_cashier"))
    with pytest.raises(InvoiceError, match=f"已登记在收据 {first.receipt_no} 上"):
        record_paper_invoice(second, "3700221130", "00012345", staff("qd_cashier"))
    with pytest.raises(InvoiceError, match="已登记发票"):
        record_paper_invoice(first, "3700221130", "00012346", staff("qd_cashier"))


def test_void_needs_reason_and_keeps_number(qd_payment, staff):
    payment = qd_payment()
    invoice = record_paper_invoice(payment, "3700221130", "00012345", staff("qd_cashier"))
    with pytest.raises(InvoiceError, match="请填写作废原因"):
        void_paper_invoice(invoice, "  ", staff("qd_cashier"))
    with pytest.raises(InvoiceError, match="请填写作废原因"):
        void_paper_invoice(invoice, "\u200b\u3000\ufeff", staff("qd_cashier"))
    void_paper_invoice(invoice, "打印错位", staff("qd_cashier"))
    db.session.expire_all()
    invoice = db.session.get(Invoice, invoice.id)
    assert invoice.status == "voided"
    assert invoice.reason == "打印错位"
    assert invoice.voided_by.username == "qd_cashier"
    with pytest.raises(InvoiceError, match="已作废"):
        void_paper_invoice(invoice, "再次作废", staff("qd_cashier"))
    # The voided number stays taken; a new invoice for the payment gets the next sheet.
    with pytest.raises(InvoiceError, match="已登记在收据"):
        record_paper_invoice(payment, "3700221130", "00012345", staff("qd_cashier"))
    again = record_paper_invoice(payment, "3700221130", "00012346", staff("qd_cashier"))
    assert again.status == "issued"


def test_taxed_paper_invoice(qd_payment, staff):
    # QD non-residential 80.00 m², paid 1090.00: VAT 1090.00 × 0.09 / 1.09 = 90.00.
    payment = qd_payment("1090.00", user_type="non_residential")
    invoice = record_paper_invoice(payment, "3700221130", "00012399", staff("qd_cashier"))
    assert invoice.tax_amount == Decimal("90.00")
    assert invoice.lines[0].tax_rate == Decimal("0.09")


def test_paper_invoice_rejected_in_e_invoice_company(make_account, staff, demo):
    account = make_account("SJZ", "80.00")
    payment = collect_payment(account, "100.00", "cash", staff("sjz_cashier"))
    with pytest.raises(InvoiceError, match="不是税控纸质发票"):
        record_paper_invoice(payment, "3700221130", "00012345", staff("sjz_cashier"))

"""Red-letter invoices of refunds, and red invoices that wait for a blue e-invoice still at the vendor.

The figures are worked by hand. TJ bills 25.00 yuan/m² for residential and 40.00 yuan/m²
for non-residential heat, so 80.00 m² residential and 50.00 m² non-residential both owe a
2000.00 heating fee for 2025-2026. TJ charges 2‰ a day from 2026-01-01, so the late fee
posted as of 2026-01-03 is 2000.00 × 0.002 × 3 = 12.00, and 2012.00 pays both in full.

A refund gives back a season's late fee before its heating fee, so a 500.00 refund is
12.00 of late fee and 488.00 of heating fee. Residential heat is VAT-exempt. Non-residential
heat carries 9 % VAT inside the tax-inclusive amount, A × 0.09 / 1.09 rounded once per line:
2000.00 → 165.14, 488.00 → 40.29, 12.00 → 0.99.
"""

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.late_fees import post_late_fee
from app.extensions import db
from app.invoicing.issuing import (
    InvoiceError, advance_e_invoice, ensure_e_invoice, record_paper_invoice, retry_e_invoice, season_invoiced, void_paper_invoice,
)
from app.invoicing.models import Invoice
from app.org.models import Company
from app.payments.models import Refund
from app.payments.refunds import request_refund
from app.payments.services import collect_payment
from app.tariffs.services import get_season
from app.tasks.invoicing import issue_e_invoice_task, issue_pending_e_invoices_task, reverse_refunds_task
from tests.invoicing.test_red_invoices import _approve_waiver, account_receivable

D = Decimal


def _invoices(direction):
    db.session.expire_all()
    return db.session.scalars(sa.select(Invoice).where(Invoice.direction == direction).order_by(Invoice.id)).all()


def _lines(invoice):
    return [(line.item, line.amount, line.tax_amount) for line in invoice.lines]


def _details(vendor, invoice):
    order = vendor.orders[invoice.order_no]["order"]
    return [(d["goodsName"], d["taxIncludedAmount"], d["tax"]) for d in order["invoiceDetail"]]


def _red_orders(vendor):
    return [no for no, entry in vendor.orders.items() if str(entry["order"]["invoiceType"]) == "2"]


def _account_with_late_fee(make_account, user_type="residential"):
    area = "80.00" if user_type == "residential" else "50.00"
    account = make_account("TJ", area, user_type=user_type)
    line = post_late_fee(account, get_season(account.company_id, "2025-2026"), date(2026, 1, 3))
    db.session.commit()
    assert line.amount == D("12.00")
    return account


def _refund(payment, amount, staff):
    refund = request_refund(payment.id, amount, "面积核减", staff("tj_cashier"))
    assert refund.status == "succeeded"
    return refund


def test_partial_refund_reverses_each_line(einvoicing, make_account, staff):
    account = _account_with_late_fee(make_account)
    season = get_season(account.company_id, "2025-2026")
    payment = collect_payment(account, "2012.00", "cash", staff("tj_cashier"))
    [blue] = _invoices("blue")
    assert blue.status == "issued"
    assert _lines(blue) == [("charge", D("2000.00"), D("0.00")), ("late_fee", D("12.00"), D("0.00"))]

    refund = _refund(payment, "500.00", staff)
    # Under an eager Celery the red invoice is made by the sweep, never inside the refund.
    assert _invoices("red") == []
    assert reverse_refunds_task(older_than_seconds=0) == 1

    [red] = _invoices("red")
    assert red.status == "issued"
    assert red.original_id == blue.id
    assert red.cause_type == "refund"
    assert red.cause_id == refund.id
    assert red.amount == D("-500.00")
    assert red.tax_amount == D("0.00")
    assert _lines(red) == [("charge", D("-488.00"), D("0.00")), ("late_fee", D("-12.00"), D("0.00"))]
    assert red.pdf.startswith(b"%PDF")
    order = einvoicing.orders[red.order_no]["order"]
    assert order["invoiceType"] == "2"
    assert order["invoiceNum"] == blue.invoice_number
    assert _details(einvoicing, red) == [("*供热*热费", "-488.00", "0.00"), ("*供热*滞纳金", "-12.00", "0.00")]
    assert season_invoiced(account.id, season.id) == D("1512.00")
    assert season_invoiced(account.id, season.id, "late_fee") == D("0.00")
    db.session.expire_all()
    done = db.session.get(Refund, refund.id)
    assert done.invoices_reversed_at is not None
    assert done.invoice_reversal_note is None

    # The sweep finds nothing left, and the vendor has one red order.
    assert reverse_refunds_task(older_than_seconds=0) == 0
    assert _red_orders(einvoicing) == [red.order_no]


def test_taxed_refunds_reverse_vat_exactly(einvoicing, make_account, staff):
    # Blue VAT 165.14 + 0.99 = 166.13. The 500.00 refund reverses 40.29 + 0.99 = 41.28.
    # The 1512.00 refund takes what is left of the heating line, so its VAT is the rest,
    # 165.14 − 40.29 = 124.85, not 1512.00 × 0.09 / 1.09 = 124.844… → 124.84 rounded again.
    account = _account_with_late_fee(make_account, "non_residential")
    payment = collect_payment(account, "2012.00", "cash", staff("tj_cashier"))
    [blue] = _invoices("blue")
    assert _lines(blue) == [("charge", D("2000.00"), D("165.14")), ("late_fee", D("12.00"), D("0.99"))]
    assert blue.tax_amount == D("166.13")

    _refund(payment, "500.00", staff)
    assert reverse_refunds_task(older_than_seconds=0) == 1
    [first] = _invoices("red")
    assert first.status == "issued"
    assert _lines(first) == [("charge", D("-488.00"), D("-40.29")), ("late_fee", D("-12.00"), D("-0.99"))]
    assert first.tax_amount == D("-41.28")
    assert _details(einvoicing, first) == [("*供热*热费", "-488.00", "-40.29"), ("*供热*滞纳金", "-12.00", "-0.99")]

    _refund(payment, "1512.00", staff)
    assert reverse_refunds_task(older_than_seconds=0) == 1
    [_first, second] = _invoices("red")
    assert second.status == "issued"
    assert _lines(second) == [("charge", D("-1512.00"), D("-124.85"))]
    assert first.tax_amount + second.tax_amount == -blue.tax_amount
    assert first.amount + second.amount == -blue.amount


def test_whole_refund_reverses_every_line(einvoicing, make_account, staff):
    account = _account_with_late_fee(make_account, "non_residential")
    payment = collect_payment(account, "2012.00", "cash", staff("tj_cashier"))
    [blue] = _invoices("blue")

    _refund(payment, "2012.00", staff)
    assert reverse_refunds_task(older_than_seconds=0) == 1

    [red] = _invoices("red")
    assert red.status == "issued"
    assert _lines(red) == [("charge", D("-2000.00"), D("-165.14")), ("late_fee", D("-12.00"), D("-0.99"))]
    assert red.amount == -blue.amount
    assert red.tax_amount == -blue.tax_amount


def test_refund_after_waiver_reverses_once(einvoicing, make_account, staff, login):
    # A 200.00 waiver leaves 1800.00 of heating fee owed; its red invoice takes 200.00 off the
    # 2000.00 heating line. A 200.00 refund then gives back the 12.00 late fee and 188.00 of
    # heating fee. The payment keeps 2000.00 − 188.00 = 1812.00 for heat, more than the
    # 1800.00 still invoiced, so only the 12.00 late fee is reversed.
    account = _account_with_late_fee(make_account)
    season = get_season(account.company_id, "2025-2026")
    payment = collect_payment(account, "2012.00", "cash", staff("tj_cashier"))
    _approve_waiver(login, account, "200.00")
    assert issue_pending_e_invoices_task(older_than_seconds=0) == 1
    [waiver_red] = _invoices("red")
    assert _lines(waiver_red) == [("charge", D("-200.00"), D("0.00"))]

    _refund(payment, "200.00", staff)
    assert reverse_refunds_task(older_than_seconds=0) == 1

    [_waiver_red, refund_red] = _invoices("red")
    assert refund_red.status == "issued"
    assert _lines(refund_red) == [("late_fee", D("-12.00"), D("0.00"))]
    assert season_invoiced(account.id, season.id) == D("1800.00")
    assert season_invoiced(account.id, season.id, "late_fee") == D("0.00")


def test_paper_refund_red_recorded_by_cashier(make_account, staff):
    # QD prints paper invoices: a 100.00 refund of a fully paid season waits as a paper red
    # invoice of −100.00 until the cashier prints it and records its numbers.
    account = make_account("QD", "80.00")
    owed = account_receivable(account)
    payment = collect_payment(account, str(owed), "cash", staff("qd_cashier"))
    record_paper_invoice(payment, "3700221130", "00012345", staff("qd_cashier"))

    refund = request_refund(payment.id, "100.00", "面积核减", staff("qd_cashier"))
    assert refund.status == "succeeded"
    assert reverse_refunds_task(older_than_seconds=0) == 1

    [red] = _invoices("red")
    assert red.medium == "paper"
    assert red.status == "pending"
    assert _lines(red) == [("charge", D("-100.00"), D("0.00"))]
    recorded = record_paper_invoice(payment, "3700221130", "00012346", staff("qd_cashier"), invoice=red)
    assert recorded.status == "issued"


def test_voided_blue_needs_no_red(make_account, staff):
    account = make_account("QD", "80.00")
    payment = collect_payment(account, str(account_receivable(account)), "cash", staff("qd_cashier"))
    blue = record_paper_invoice(payment, "3700221130", "00012345", staff("qd_cashier"))
    void_paper_invoice(blue, "交款人要求更改抬头", staff("qd_cashier"))

    refund = request_refund(payment.id, "100.00", "面积核减", staff("qd_cashier"))
    assert reverse_refunds_task(older_than_seconds=0) == 1

    assert _invoices("red") == []
    db.session.expire_all()
    done = db.session.get(Refund, refund.id)
    assert done.invoices_reversed_at is not None
    assert done.shown_invoice_reversal_note == "原蓝字发票已作废，无需红冲。"


def _payment_with_blue_at_vendor(einvoicing, account, staff, amount):
    """Collect a payment whose blue e-invoice the vendor accepted but has not issued yet."""
    company = db.session.get(Company, account.company_id)
    company.invoice_mode = "receipt"
    db.session.commit()
    payment = collect_payment(account, amount, "cash", staff("tj_cashier"))
    company.invoice_mode = "e_invoice"
    db.session.commit()
    einvoicing.delay_seconds = 3600
    blue_id = ensure_e_invoice(payment.id)
    assert advance_e_invoice(blue_id) == "issuing"
    assert advance_e_invoice(blue_id) == "issuing"
    return payment, db.session.get(Invoice, blue_id)


def test_waiver_red_follows_pending_blue_once(einvoicing, make_account, staff, login):
    # 87.35 m² × 25.00 = 2183.75 paid; a 200.00 waiver reverses 200.00 once the blue is issued.
    account = make_account("TJ", "87.35")
    _payment, blue = _payment_with_blue_at_vendor(einvoicing, account, staff, "2183.75")

    _approve_waiver(login, account, "200.00")

    [red] = _invoices("red")
    assert red.status == "pending"
    assert red.original_id == blue.id
    assert red.amount == D("-200.00")
    # While the blue one is at the vendor, the red one waits and the sweep leaves it alone.
    assert issue_pending_e_invoices_task(older_than_seconds=0) == 0
    assert advance_e_invoice(red.id) == "waiting"
    assert _red_orders(einvoicing) == []

    # The result query runs twice, e.g. a redelivered task: the red invoice follows once.
    einvoicing.delay_seconds = 0
    assert issue_e_invoice_task(account.company_id, invoice_id=blue.id) == "issued"
    assert issue_e_invoice_task(account.company_id, invoice_id=blue.id) == "issued"

    [blue] = _invoices("blue")
    [red] = _invoices("red")
    assert red.status == "issued"
    assert red.attempts == 2
    assert _red_orders(einvoicing) == [red.order_no]
    assert einvoicing.orders[red.order_no]["order"]["invoiceNum"] == blue.invoice_number
    assert issue_pending_e_invoices_task(older_than_seconds=0) == 0


def test_waiver_red_not_needed_after_blue_fails(einvoicing, make_account, staff, login):
    account = make_account("TJ", "87.35")
    einvoicing.fail_next = 1
    _payment, blue = _payment_with_blue_at_vendor(einvoicing, account, staff, "2183.75")
    _approve_waiver(login, account, "200.00")

    einvoicing.delay_seconds = 0
    assert issue_e_invoice_task(account.company_id, invoice_id=blue.id) == "failed"

    [red] = _invoices("red")
    assert red.status == "not_needed"
    assert "开票失败，无需红冲" in red.last_error
    assert _red_orders(einvoicing) == []

    # Issued again, the blue invoice states the full 2183.75 once more, so the red one follows.
    retry_e_invoice(_invoices("blue")[0], staff("tj_finance"))
    [blue] = _invoices("blue")
    [red] = _invoices("red")
    assert blue.status == "issued"
    assert red.status == "issued"
    assert red.last_error == ""
    assert einvoicing.orders[red.order_no]["order"]["invoiceNum"] == blue.invoice_number


def test_refund_red_waits_for_pending_blue(einvoicing, make_account, staff):
    account = _account_with_late_fee(make_account)
    payment, blue = _payment_with_blue_at_vendor(einvoicing, account, staff, "2012.00")

    _refund(payment, "500.00", staff)
    assert reverse_refunds_task(older_than_seconds=0) == 1
    [red] = _invoices("red")
    assert red.status == "pending"
    assert _lines(red) == [("charge", D("-488.00"), D("0.00")), ("late_fee", D("-12.00"), D("0.00"))]

    einvoicing.delay_seconds = 0
    assert issue_e_invoice_task(account.company_id, invoice_id=blue.id) == "issued"
    [red] = _invoices("red")
    assert red.status == "issued"
    assert _red_orders(einvoicing) == [red.order_no]


def _paper_company(account):
    company = db.session.get(Company, account.company_id)
    company.invoice_mode = "paper_tax_invoice"
    db.session.commit()


def test_blue_after_partial_refund_lists_kept(make_account, staff):
    # Non-residential 50.00 m² owes 2000.00 plus a 12.00 late fee, and pays 2012.00 in full.
    # The 500.00 refund gives back the 12.00 late fee and 488.00 of the heating fee, so a
    # blue invoice made afterwards lists 2000.00 − 488.00 = 1512.00 of heat and no late fee.
    # Its VAT is 1512.00 × 0.09 / 1.09 = 124.844… → 124.84.
    account = _account_with_late_fee(make_account, "non_residential")
    _paper_company(account)
    season = get_season(account.company_id, "2025-2026")
    payment = collect_payment(account, "2012.00", "cash", staff("tj_cashier"))
    first = _refund(payment, "500.00", staff)
    assert reverse_refunds_task(older_than_seconds=0) == 1
    assert _invoices("red") == []

    blue = record_paper_invoice(payment, "1200221130", "00012345", staff("tj_cashier"))

    assert _lines(blue) == [("charge", D("1512.00"), D("124.84"))]
    assert blue.amount == D("1512.00")
    assert blue.tax_amount == D("124.84")
    assert season_invoiced(account.id, season.id) == D("1512.00")
    assert season_invoiced(account.id, season.id, "late_fee") == D("0.00")
    db.session.expire_all()
    assert db.session.get(Refund, first.id).shown_invoice_reversal_note == f"收据 {payment.receipt_no} 尚未开具发票，无需红冲。"

    # A later 200.00 refund is all heating fee: its red invoice reverses 200.00 of the blue
    # one, VAT 200.00 × 0.09 / 1.09 = 16.513… → 16.51. Blue minus red is 1312.00, which is
    # 2012.00 paid less 700.00 refunded.
    _refund(payment, "200.00", staff)
    assert reverse_refunds_task(older_than_seconds=0) == 1
    [red] = _invoices("red")
    assert red.original_id == blue.id
    assert _lines(red) == [("charge", D("-200.00"), D("-16.51"))]
    assert blue.amount + red.amount == D("1312.00")
    assert season_invoiced(account.id, season.id) == D("1312.00")


def test_refund_before_blue_made_reverses_nothing(make_account, staff):
    # The refund's red invoice is worked out after the blue one was made from the kept
    # amounts, so there is nothing left to reverse: 2012.00 − 300.00 = 1712.00 stays invoiced.
    account = _account_with_late_fee(make_account)
    _paper_company(account)
    season = get_season(account.company_id, "2025-2026")
    payment = collect_payment(account, "2012.00", "cash", staff("tj_cashier"))
    refund = _refund(payment, "300.00", staff)

    blue = record_paper_invoice(payment, "1200221130", "00012346", staff("tj_cashier"))
    assert reverse_refunds_task(older_than_seconds=0) == 1

    assert _lines(blue) == [("charge", D("1712.00"), D("0.00"))]
    assert _invoices("red") == []
    assert season_invoiced(account.id, season.id) == D("1712.00")
    db.session.expire_all()
    assert db.session.get(Refund, refund.id).invoice_reversal_note is not None


def test_fully_refunded_payment_gets_no_blue(make_account, staff):
    account = _account_with_late_fee(make_account)
    _paper_company(account)
    payment = collect_payment(account, "2012.00", "cash", staff("tj_cashier"))
    _refund(payment, "2012.00", staff)

    with pytest.raises(InvoiceError) as raised:
        record_paper_invoice(payment, "1200221130", "00012347", staff("tj_cashier"))

    assert str(raised.value) == f"收据 {payment.receipt_no} 的款项已全部退回，无可开票金额，不开具发票。"
    assert _invoices("blue") == []


def test_red_reason_shown_in_reader_language(make_account, staff, login):
    account = make_account("QD", "80.00")
    payment = collect_payment(account, str(account_receivable(account)), "cash", staff("qd_cashier"))
    record_paper_invoice(payment, "3700221130", "00012345", staff("qd_cashier"))
    refund = request_refund(payment.id, "100.00", "面积核减", staff("qd_cashier"))
    assert reverse_refunds_task(older_than_seconds=0) == 1

    [red] = _invoices("red")
    # The vendor and the printed invoice get the Chinese reason.
    assert red.reason == f"销售退回：退费 {refund.id}（面积核减）"
    cashier = login("qd_cashier")
    chinese = cashier.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert f"销售退回：退费 {refund.id}（面积核减）" in chinese
    assert cashier.post("/language", data={"locale": "en"}).status_code in (302, 303)
    english = cashier.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert f"Sales return: refund {refund.id} (面积核减)" in english
    assert "销售退回" not in english

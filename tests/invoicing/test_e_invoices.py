"""E-invoices through the vendor simulator: issue after payment, failures, retries and the stored PDF."""

import subprocess
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.extensions import db
from app.invoicing.issuing import InvoiceError, advance_e_invoice, ensure_e_invoice, failed_e_invoices, retry_e_invoice
from app.invoicing.models import Invoice
from app.payments.models import Payment
from app.payments.services import collect_payment


def _invoices(payment):
    db.session.expire_all()
    return db.session.scalars(sa.select(Invoice).where(Invoice.payment_id == payment.id).order_by(Invoice.id)).all()


def test_counter_payment_gets_e_invoice_with_vat(einvoicing, make_account, staff, tmp_path):
    # Non-residential TJ: 87.35 m² × 40.00 = 3494.00; VAT 3494.00 × 0.09 / 1.09 = 288.4954… → 288.50.
    account = make_account("TJ", "87.35", user_type="non_residential")
    payment = collect_payment(account, "3494.00", "cash", staff("tj_cashier"))

    [invoice] = _invoices(payment)
    assert invoice.status == "issued"
    assert invoice.medium == "electronic"
    assert invoice.amount == Decimal("3494.00")
    assert invoice.tax_amount == Decimal("288.50")
    [line] = invoice.lines
    assert line.tax_rate == Decimal("0.09")
    assert line.user_type == "non_residential"
    assert len(invoice.invoice_number) == 20
    assert invoice.pdf_url.startswith(einvoicing.base_url)
    assert invoice.pdf.startswith(b"%PDF")
    pdf_path = tmp_path / "invoice.pdf"
    pdf_path.write_bytes(invoice.pdf)
    text = subprocess.run(["pdftotext", "-layout", str(pdf_path), "-"], capture_output=True, text=True, check=True).stdout
    assert invoice.invoice_number in text
    assert "3494.00" in text
    assert "288.50" in text
    assert "3205.50" in text


def test_residential_invoice_is_exempt(einvoicing, make_account, staff):
    # Residential TJ: 87.35 m² × 25.00 = 2183.75, paid in part: 1000.00 with no VAT.
    account = make_account("TJ", "87.35")
    payment = collect_payment(account, "1000.00", "cash", staff("tj_cashier"))
    [invoice] = _invoices(payment)
    assert invoice.status == "issued"
    assert invoice.tax_amount == Decimal("0.00")
    assert invoice.lines[0].vat_exempt
    order = next(iter(einvoicing.orders.values()))["order"]
    assert order["invoiceDetail"][0]["favouredPolicyFlag"] == "1"
    assert order["invoiceDetail"][0]["taxIncludedAmount"] == "1000.00"


def test_failed_invoice_listed_and_retried(einvoicing, make_account, staff):
    einvoicing.fail_next = 1
    account = make_account("TJ", "87.35")
    payment = collect_payment(account, "2183.75", "cash", staff("tj_cashier"))

    assert db.session.get(Payment, payment.id).amount == Decimal("2183.75")
    [invoice] = _invoices(payment)
    assert invoice.status == "failed"
    assert "模拟开票失败" in invoice.last_error
    assert [i.id for i in failed_e_invoices()] == [invoice.id]

    retry_e_invoice(invoice, staff("tj_finance"))
    [invoice] = _invoices(payment)
    assert invoice.status == "issued"
    assert invoice.order_no.endswith("-2")
    assert failed_e_invoices() == []


def test_failed_invoice_not_retried_beside_new_one(einvoicing, make_account, staff):
    einvoicing.fail_next = 1
    account = make_account("TJ", "87.35")
    payment = collect_payment(account, "2183.75", "cash", staff("tj_cashier"))
    [failed] = _invoices(payment)
    assert failed.status == "failed"

    # The invoice is requested again for the payment (a repeated task), which makes a new blue one.
    new_id = ensure_e_invoice(payment.id)
    assert new_id != failed.id

    with pytest.raises(InvoiceError) as raised:
        retry_e_invoice(failed, staff("tj_finance"))
    assert failed.order_no in str(raised.value)
    assert db.session.get(Invoice, new_id).order_no in str(raised.value)
    db.session.expire_all()
    assert db.session.get(Invoice, failed.id).status == "failed"
    live = [i for i in _invoices(payment) if i.status in ("pending", "issuing", "issued")]
    assert [i.id for i in live] == [new_id]


def test_unreachable_vendor_keeps_payment(einvoicing, make_account, staff, app, monkeypatch, login):
    monkeypatch.setitem(app.config, "EINVOICE_API_BASE", "http://127.0.0.1:9/open/v1/services")
    account = make_account("TJ", "87.35")
    payment = collect_payment(account, "2183.75", "cash", staff("tj_cashier"))

    assert db.session.get(Payment, payment.id) is not None
    [invoice] = _invoices(payment)
    assert invoice.status == "failed"
    assert "重试 12 次后仍未开具" in invoice.last_error
    assert "Connection refused" in invoice.last_error
    # The task stored the reason with its msgid, so the failed-invoice list translates it.
    finance = login("tj_finance")
    finance.post("/language", data={"locale": "en"})
    page = finance.get("/invoicing/failed").get_data(as_text=True)
    assert "Not issued after 12 retries: " in page
    assert "Connection refused" in page
    assert "重试 12 次后仍未开具" not in page


def test_unconfigured_vendor_makes_no_call(demo, make_account, staff, app, monkeypatch, login):
    monkeypatch.setitem(app.config, "EINVOICE_APP_KEY", "")
    account = make_account("TJ", "87.35")
    payment = collect_payment(account, "2183.75", "cash", staff("tj_cashier"))
    [invoice] = _invoices(payment)
    assert invoice.status == "failed"
    # Both missing pieces at once: the demo sets neither the vendor nor TJ's seller tax id.
    assert "电子发票服务商未配置" in invoice.last_error
    assert "本公司未填写纳税人识别号" in invoice.last_error
    # The task stored the invoice error with its msgid, so an English reader gets English.
    finance = login("tj_finance")
    finance.post("/language", data={"locale": "en"})
    page = finance.get("/invoicing/failed").get_data(as_text=True)
    assert "E-invoicing is not set up: the e-invoice vendor is not configured, the company&#39;s taxpayer ID is missing." in page
    assert "电子发票服务商未配置" not in page


def _setup_section(html):
    return html.split('id="e-invoice-setup"', 1)[1].split("</section>", 1)[0]


def test_cashier_told_whom_to_ask(demo, make_account, staff, app, monkeypatch, login):
    monkeypatch.setitem(app.config, "EINVOICE_APP_KEY", "")
    collect_payment(make_account("TJ", "87.35"), "2183.75", "cash", staff("tj_cashier"))

    section = _setup_section(login("tj_cashier").get("/invoicing/failed").get_data(as_text=True))

    assert "电子发票服务商尚未接通。请联系集团系统运维人员配置服务商账号。" in section
    assert "请联系本公司管理员（津南热力分公司管理员）在“开票设置”中填写" in section
    assert "HEATFLOW_" not in section
    assert "/invoicing/settings" not in section


def test_admin_told_what_to_set(demo, app, monkeypatch, login):
    monkeypatch.setitem(app.config, "EINVOICE_API_BASE", "http://127.0.0.1:9/open/v1/services")
    monkeypatch.setitem(app.config, "EINVOICE_APP_KEY", "")
    monkeypatch.setitem(app.config, "EINVOICE_APP_SECRET", "")

    section = _setup_section(login("tj_admin").get("/invoicing/settings").get_data(as_text=True))

    assert "HEATFLOW_EINVOICE_APP_KEY、HEATFLOW_EINVOICE_APP_SECRET" in section
    assert "HEATFLOW_EINVOICE_API_BASE" not in section
    assert "README" in section
    assert '<a href="/invoicing/settings">开票设置</a>' in section


def test_setup_notice_gone_when_complete(einvoicing, login):
    assert 'id="e-invoice-setup"' not in login("tj_cashier").get("/invoicing/failed").get_data(as_text=True)
    assert 'id="e-invoice-setup"' not in login("tj_admin").get("/invoicing/settings").get_data(as_text=True)
    # A company that prints receipts only is not asked to set up e-invoices.
    assert 'id="e-invoice-setup"' not in login("sjz_admin").get("/invoicing/settings").get_data(as_text=True)


def test_delayed_result_polled_until_issued(einvoicing, make_account, staff, app, monkeypatch):
    # With the result 0.3 s late, the first query finds the order in progress (status 20).
    monkeypatch.setitem(app.config, "EINVOICE_APP_KEY", "")
    account = make_account("TJ", "87.35")
    payment = collect_payment(account, "2183.75", "cash", staff("tj_cashier"))
    monkeypatch.setitem(app.config, "EINVOICE_APP_KEY", "SIMKEY0001")
    einvoicing.delay_seconds = 0.3
    [failed] = _invoices(payment)
    failed.status = "pending"
    db.session.commit()

    assert advance_e_invoice(failed.id) == "issuing"
    assert advance_e_invoice(failed.id) == "issuing"
    time.sleep(0.35)
    assert advance_e_invoice(failed.id) == "issued"
    assert ensure_e_invoice(payment.id) == failed.id


def test_resubmit_of_same_order_is_harmless(einvoicing, make_account, staff, app, monkeypatch):
    monkeypatch.setitem(app.config, "EINVOICE_APP_KEY", "")
    account = make_account("TJ", "87.35")
    payment = collect_payment(account, "2183.75", "cash", staff("tj_cashier"))
    monkeypatch.setitem(app.config, "EINVOICE_APP_KEY", "SIMKEY0001")
    [invoice] = _invoices(payment)
    invoice.status = "pending"
    db.session.commit()
    assert advance_e_invoice(invoice.id) == "issuing"
    # A worker that died after the vendor accepted the order submits it again: E9106 means it is there.
    invoice.status = "pending"
    db.session.commit()
    assert advance_e_invoice(invoice.id) == "issuing"
    assert advance_e_invoice(invoice.id) == "issued"
    assert len(einvoicing.orders) == 1

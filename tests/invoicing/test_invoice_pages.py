"""Invoice and reconciliation pages: settings, paper invoice recording and voiding, the retry list and statement upload."""

import io
import subprocess
from decimal import Decimal

import sqlalchemy as sa

from app.extensions import db
from app.invoicing.models import Invoice, InvoiceProfile
from app.org.models import Company
from app.payments.models import Payment, ReconciliationItem, WechatMerchant
from app.payments.services import collect_payment

# A 1×1 red PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000000301010018dd8db40000000049454e44ae426082"
)


def _settings(**values):
    data = {"method": "receipt", "title": "", "notes": "", "seller_tax_id": "", "vat_percent": "9", "residential_exempt": "on"}
    data.update(values)
    return data


def test_admin_saves_invoice_settings(demo, login):
    admin = login("sjz_admin")
    assert admin.get("/invoicing/settings").status_code == 200
    response = admin.post("/invoicing/settings", data=_settings(
        method="e_invoice", title="石门热力收款收据", notes="开票咨询 0311-1234567", seller_tax_id="91130100mA0SJZ0001", vat_percent="9",
    ))
    assert response.status_code == 302
    db.session.expire_all()
    assert db.session.get(Company, demo["SJZ"].id).invoice_mode == "e_invoice"
    profile = db.session.scalar(sa.select(InvoiceProfile).filter_by(company_id=demo["SJZ"].id))
    assert profile.seller_tax_id == "91130100MA0SJZ0001"
    assert profile.vat_rate == Decimal("0.09")
    assert profile.residential_exempt


def test_bad_settings_rejected_and_nothing_stored(demo, login):
    admin = login("sjz_admin")
    for values, message in [
        ({"vat_percent": "abc"}, "不是数字"),
        ({"vat_percent": "18"}, "须在 0 到 17 之间"),
        ({"method": "e_invoice"}, "须填写纳税人识别号"),
        ({"seller_tax_id": "123"}, "纳税人识别号「123」无效"),
        ({"method": "fax"}, "开票方式「fax」无效"),
    ]:
        response = admin.post("/invoicing/settings", data=_settings(**values))
        assert response.status_code == 400, values
        assert message in response.get_data(as_text=True), values
    response = admin.post("/invoicing/settings", data={**_settings(), "seal": (io.BytesIO(b"GIF89a"), "seal.gif")})
    assert response.status_code == 400
    assert "须为 PNG 文件" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(InvoiceProfile).filter_by(company_id=demo["SJZ"].id)) is None


def test_settings_need_permission(demo, login):
    assert login("sjz_cashier").get("/invoicing/settings").status_code == 403
    assert login("hq_admin").get("/invoicing/settings").status_code == 403


def test_receipt_shows_title_notes_and_seal(demo, login, make_account, staff, tmp_path):
    admin = login("sjz_admin")
    response = admin.post("/invoicing/settings", data={
        **_settings(title="石门热力有限公司收款收据", notes="本收据加盖财务专用章有效"), "seal": (io.BytesIO(PNG), "seal.png"),
    })
    assert response.status_code == 302
    account = make_account("SJZ", "80.00")
    payment = collect_payment(account, "100.00", "cash", staff("sjz_cashier"))
    pdf = login("sjz_cashier").get(f"/payments/{payment.id}/receipt.pdf")
    assert pdf.status_code == 200
    path = tmp_path / "receipt.pdf"
    path.write_bytes(pdf.data)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True).stdout
    assert "石门热力有限公司收款收据" in text
    assert "本收据加盖财务专用章有效" in text
    images = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True).stdout
    assert len(images.strip().splitlines()) == 3  # two header lines and the seal


def test_cashier_records_and_voids_paper_invoice(demo, login, make_account, staff):
    account = make_account("QD", "80.00")
    payment = collect_payment(account, "100.00", "cash", staff("qd_cashier"))
    cashier = login("qd_cashier")
    page = cashier.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert "登记纸质发票" in page

    response = cashier.post(f"/invoicing/payments/{payment.id}/paper", data={"invoice_code": "370022113", "invoice_number": "00012345"})
    assert response.status_code == 302
    assert "须为 10 位或 12 位数字" in cashier.get(response.headers["Location"]).get_data(as_text=True)
    cashier.post(f"/invoicing/payments/{payment.id}/paper", data={"invoice_code": "3700221130", "invoice_number": "00012345"})
    page = cashier.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert "00012345" in page
    assert "已开票" in page

    invoice = db.session.scalar(sa.select(Invoice).filter_by(payment_id=payment.id))
    cashier.post(f"/invoicing/invoices/{invoice.id}/void", data={"reason": ""})
    db.session.expire_all()
    assert db.session.get(Invoice, invoice.id).status == "issued"
    cashier.post(f"/invoicing/invoices/{invoice.id}/void", data={"reason": "打印错位"})
    db.session.expire_all()
    assert db.session.get(Invoice, invoice.id).status == "voided"
    page = cashier.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert "打印错位" in page
    assert "已作废" in page


def test_failed_list_and_pdf(einvoicing, login, make_account, staff):
    einvoicing.fail_next = 1
    account = make_account("TJ", "87.35")
    payment = collect_payment(account, "2183.75", "cash", staff("tj_cashier"))
    finance = login("tj_finance")
    page = finance.get("/invoicing/failed").get_data(as_text=True)
    assert payment.receipt_no in page
    assert "模拟开票失败" in page
    invoice = db.session.scalar(sa.select(Invoice).filter_by(payment_id=payment.id))
    assert finance.post(f"/invoicing/invoices/{invoice.id}/retry").status_code == 302
    assert "没有待重开的电子发票" in finance.get("/invoicing/failed").get_data(as_text=True)
    pdf = finance.get(f"/invoicing/invoices/{invoice.id}.pdf")
    assert pdf.status_code == 200
    assert pdf.data.startswith(b"%PDF")
    page = login("tj_cashier").get(f"/payments/{payment.id}").get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Invoice, invoice.id).invoice_number in page


def test_statement_upload_and_resolve(demo, login, make_account):
    from tests.payments.test_reconciliation import BILL

    account = make_account("TJ", "87.35")
    db.session.add(WechatMerchant(company_id=demo["TJ"].id, sub_mchid="1900000111"))
    from tests.payments.test_reconciliation import _at

    db.session.add(Payment(company_id=demo["TJ"].id, account_id=account.id, amount=Decimal("100.00"), method="wechat", channel="wechat",
                           paid_at=_at(9), receipt_no="TJ-2025-900001", channel_transaction_id="4200000001"))
    db.session.commit()
    finance = login("tj_finance")
    bad = finance.post("/reconciliation/statements", data={
        "merchant_id": "1900000111", "day": "2025-12-04", "statement": (io.BytesIO(BILL.encode()), "bill.csv"),
    })
    assert "不在 2025-12-04 当天" in finance.get(bad.headers["Location"]).get_data(as_text=True)
    response = finance.post("/reconciliation/statements", data={
        "merchant_id": "1900000111", "day": "2025-12-03", "statement": (io.BytesIO(BILL.encode()), "bill.csv"),
    })
    page = finance.get(response.headers["Location"]).get_data(as_text=True)
    # 4200000001 matches; 4200000002 and the refund 50300000001 are missing on our side.
    assert "一致 1 笔，差异 2 笔" in page
    assert "4200000002" in page
    item = db.session.scalar(sa.select(ReconciliationItem).filter_by(channel_txn_id="4200000002"))
    finance.post(f"/reconciliation/items/{item.id}/resolve", data={"reason": "已补记收款"})
    db.session.expire_all()
    assert db.session.get(ReconciliationItem, item.id).status == "resolved"
    assert login("tj_cashier").get("/reconciliation/").status_code == 403


def _receipt_text(login, make_account, staff, tmp_path, company_code, method):
    company = db.session.scalar(sa.select(Company).filter_by(code=company_code))
    company.invoice_mode = method
    db.session.commit()
    account = make_account(company_code, "80.00")
    payment = collect_payment(account, "100.00", "cash", staff(f"{company_code.lower()}_cashier"))
    pdf = login(f"{company_code.lower()}_cashier").get(f"/payments/{payment.id}/receipt.pdf")
    assert pdf.status_code == 200
    path = tmp_path / f"receipt-{method}.pdf"
    path.write_bytes(pdf.data)
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return "".join(text.split())


def test_receipt_note_follows_invoice_method(demo, login, make_account, staff, tmp_path):
    e_invoice = _receipt_text(login, make_account, staff, tmp_path, "SJZ", "e_invoice")
    paper = _receipt_text(login, make_account, staff, tmp_path, "SJZ", "paper_tax_invoice")
    receipt = _receipt_text(login, make_account, staff, tmp_path, "SJZ", "receipt")

    assert "电子发票在缴费后自动开具，无需申请" in e_invoice
    assert "申请开具" not in e_invoice
    assert "如需增值税发票，请持本收据到营业厅开具" in paper
    assert "本收据为收费凭证，不是发票" in receipt

"""The receipt PDF embeds its CJK font, carries the receipt's facts as text and loads nothing else."""

import subprocess

import pytest

from app.extensions import db
from app.invoicing.receipt import BlockedResourceError, make_url_fetcher
from app.payments.models import Payment
from app.payments.services import collect_payment

TOOL_TIMEOUT_SECONDS = 60


def _run(*command):
    return subprocess.run(command, capture_output=True, text=True, check=True, timeout=TOOL_TIMEOUT_SECONDS).stdout


@pytest.fixture
def paid(tj_account, cashier):
    """A 2918.25 cash payment of TJ-0001031: 1960.43 prior arrears and 957.82 of the 2025-2026 fee."""
    account = tj_account("TJ-0001031")
    payment = collect_payment(account, "2918.25", "cash", cashier("tj_cashier"))
    return account, payment


def _fetch_pdf(client, payment, tmp_path, name):
    response = client.get(f"/payments/{payment.id}/receipt.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    path = tmp_path / name
    path.write_bytes(response.data)
    return path


def test_receipt_embeds_cjk_font(paid, login, tmp_path):
    _, payment = paid
    pdf = _fetch_pdf(login("tj_cashier"), payment, tmp_path, "receipt.pdf")

    rows = [line.split() for line in _run("pdffonts", str(pdf)).splitlines()[2:]]

    cjk = [row for row in rows if "CJK" in row[0]]
    assert cjk, f"no CJK font in {rows}"
    # Columns end with: emb sub uni object-id generation.
    assert all(row[-5] == "yes" for row in cjk)
    assert all(row[-5] == "yes" for row in rows), f"a font is not embedded: {rows}"


def test_receipt_text_extracts(paid, login, tmp_path):
    account, payment = paid
    pdf = _fetch_pdf(login("tj_cashier"), payment, tmp_path, "receipt.pdf")

    text = _run("pdftotext", "-layout", str(pdf), "-")

    assert "津南热力有限公司 供热费收据" in text
    assert "贰仟玖佰壹拾捌元贰角伍分" in text
    assert "2918.25" in text
    assert account.account_no in text
    assert "TJ-0001031" in text
    assert payment.receipt_no in text
    assert "柳林里3号楼3单元902" in text
    assert "往年欠费" in text
    assert "1960.43" in text
    assert "2025-2026 供暖季热费" in text
    assert "957.82" in text
    assert "136.32" in text
    assert "25.00 元/㎡" in text
    assert "现金" in text
    assert "收费员" in text  # cashier name
    assert "电子发票" in text  # TJ issues e-invoices on request
    assert "补打（第" not in text


def test_reprint_keeps_number_marks_copy(paid, login, tmp_path):
    _, payment = paid
    client = login("tj_cashier")
    first = _run("pdftotext", str(_fetch_pdf(client, payment, tmp_path, "first.pdf")), "-")
    second = _run("pdftotext", str(_fetch_pdf(client, payment, tmp_path, "second.pdf")), "-")

    assert payment.receipt_no in first
    assert payment.receipt_no in second
    assert "补打（第" not in first
    assert "补打（第 2 次打印）" in second


def test_receipt_rasterises_one_page(paid, login, tmp_path):
    _, payment = paid
    pdf = _fetch_pdf(login("tj_cashier"), payment, tmp_path, "receipt.pdf")

    info = _run("pdfinfo", str(pdf))
    _run("pdftoppm", "-png", "-r", "80", str(pdf), str(tmp_path / "receipt"))

    assert "Pages:           1" in info
    assert (tmp_path / "receipt-1.png").stat().st_size > 0


def test_missing_font_reported(paid, login, app_ctx):
    _, payment = paid
    client = login("tj_cashier")
    configured = app_ctx.config["RECEIPT_FONT_PATH"]
    app_ctx.config["RECEIPT_FONT_PATH"] = "/nonexistent/receipt-font.ttc"
    try:
        response = client.get(f"/payments/{payment.id}/receipt.pdf")
    finally:
        app_ctx.config["RECEIPT_FONT_PATH"] = configured

    assert response.status_code == 503
    assert "/nonexistent/receipt-font.ttc" in response.get_data(as_text=True)
    assert "RECEIPT_FONT_PATH" in response.get_data(as_text=True)
    assert db.session.get(Payment, payment.id).receipt_prints == 0


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/font.ttf", "file:///etc/passwd", "file:///usr/share/fonts/opentype/noto/NotoSerifCJK-Regular.ttc"],
)
def test_url_fetcher_blocks_other_resources(url, tmp_path):
    font = tmp_path / "font.ttc"
    font.write_bytes(b"font bytes")
    fetch = make_url_fetcher(font)

    with pytest.raises(BlockedResourceError):
        fetch(url)


def test_url_fetcher_serves_font_and_data(tmp_path):
    font = tmp_path / "font.ttc"
    font.write_bytes(b"font bytes")
    fetch = make_url_fetcher(font)

    served = fetch(font.as_uri())
    inline = fetch("data:text/plain;base64,aGk=")

    with served["file_obj"] as handle:
        assert handle.read() == b"font bytes"
    with inline["file_obj"] as handle:
        assert handle.read() == b"hi"


def test_receipt_shows_suspension_ratio(tj_account, cashier, login, tmp_path):
    # TJ-0001041 is 停供 (suspended): 95.66 m² × 25.00 × 0.20 = 478.30, plus 1646.89 prior arrears.
    payment = collect_payment(tj_account("TJ-0001041"), "2125.19", "card", cashier("tj_cashier"), note="POS 参考号 0001")
    pdf = _fetch_pdf(login("tj_cashier"), payment, tmp_path, "receipt.pdf")

    text = _run("pdftotext", "-layout", str(pdf), "-")

    assert "25.00 元/㎡（按 20% 收取）" in text
    assert "478.30" in text
    assert "1646.89" in text
    assert "贰仟壹佰贰拾伍元壹角玖分" in text
    assert "银行卡" in text
    assert "POS 参考号 0001" in text


def test_counter_refund_receipt(paid, login, cashier, tmp_path):
    from app.payments.refunds import request_refund

    account, payment = paid
    # 2918.25 paid; refunding 1000.00 gives back the 957.82 of 2025-2026 first, then 42.18 of the arrears.
    refund = request_refund(payment.id, "1000.00", "面积核减", cashier("tj_cashier"))
    assert refund.status == "succeeded"
    client = login("tj_cashier")
    response = client.get(f"/payments/refunds/{refund.id}/receipt.pdf")
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    pdf = tmp_path / "refund.pdf"
    pdf.write_bytes(response.data)

    text = _run("pdftotext", "-layout", str(pdf), "-")
    assert "津南热力有限公司 供热费收据（退费）" in text
    assert refund.receipt_no in text
    assert payment.receipt_no in text
    assert "壹仟元整" in text
    assert "2025-2026 供暖季热费退回" in text
    assert "往年欠费退回" in text
    assert "面积核减" in text
    assert account.account_no in text
    assert "补打（" not in text
    fonts = [line.split() for line in _run("pdffonts", str(pdf)).splitlines()[2:]]
    assert fonts and all(row[-5] == "yes" for row in fonts)
    # A PNG of the page for a look at the layout.
    _run("pdftoppm", "-png", "-r", "60", "-singlefile", str(pdf), str(tmp_path / "refund"))
    assert (tmp_path / "refund.png").stat().st_size > 0

    again = client.get(f"/payments/refunds/{refund.id}/receipt.pdf")
    (tmp_path / "again.pdf").write_bytes(again.data)
    assert "补打（第 2 次打印）" in _run("pdftotext", "-layout", str(tmp_path / "again.pdf"), "-")
    page = client.get(f"/payments/{payment.id}").get_data(as_text=True)
    assert f"/payments/refunds/{refund.id}/receipt.pdf" in page


def test_refund_receipt_of_other_company_hidden(paid, login, cashier):
    from app.payments.refunds import request_refund

    _, payment = paid
    refund = request_refund(payment.id, "10.00", "重复缴费", cashier("tj_cashier"))
    assert login("qd_cashier").get(f"/payments/refunds/{refund.id}/receipt.pdf").status_code == 404

"""Invoice settings, paper invoice recording and reconciliation driven through Chromium with CSRF checks on."""

from datetime import date
from decimal import Decimal

import pytest
import sqlalchemy as sa

from app.billing.late_fees import post_late_fee
from app.extensions import db
from app.invoicing.models import Invoice
from app.payments.models import Payment, ReconciliationItem, WechatMerchant
from app.payments.services import collect_payment
from app.tariffs.services import get_season
from app.tasks.invoicing import reverse_refunds_task
from tests.invoicing.conftest import einvoicing, vendor  # noqa: F401  (fixture)
from tests.payments.test_reconciliation import BILL, _at
from tests.processes.conftest import make_account, user  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def test_admin_edits_invoice_settings(page, browser_login, screenshot, demo):
    browser_login(page, "tj_admin")
    page.goto("/invoicing/settings")
    page.get_by_label("税控纸质发票").check()
    page.get_by_label("票面标题").fill("津南热力有限公司收款收据")
    page.get_by_label("非居民供热税率（%）").fill("9")
    with page.expect_navigation():
        page.get_by_role("button", name="保存开票设置").click()
    assert "开票设置已保存" in page.locator(".flash").inner_text()
    assert page.get_by_label("税控纸质发票").is_checked()
    screenshot(page, "invoice-settings")


def test_cashier_records_paper_invoice(page, browser_login, screenshot, make_account):
    account = make_account("QD", "80.00")
    payment = collect_payment(account, "100.00", "cash", user("qd_cashier"))
    browser_login(page, "qd_cashier")
    page.goto(f"/payments/{payment.id}")
    form = page.locator("#paper-invoice-form")
    form.get_by_label("发票代码").fill("3700221130")
    form.get_by_label("发票号码").fill("00012345")
    with page.expect_navigation():
        form.get_by_role("button", name="登记纸质发票").click()
    rows = page.locator("#payment-invoices tbody tr").all_inner_texts()
    assert len(rows) == 1
    assert "00012345" in rows[0]
    assert "已开票" in rows[0]
    screenshot(page, "payment-paper-invoice")
    db.session.expire_all()
    assert db.session.scalar(sa.select(Invoice.invoice_number).filter_by(payment_id=payment.id)) == "00012345"


def test_finance_reconciles_and_resolves(page, browser_login, screenshot, make_account, demo, tmp_path):
    account = make_account("TJ", "87.35")
    db.session.add(WechatMerchant(company_id=demo["TJ"].id, sub_mchid="1900000111"))
    db.session.add(Payment(company_id=demo["TJ"].id, account_id=account.id, amount=Decimal("100.00"), method="wechat", channel="wechat",
                           paid_at=_at(9), receipt_no="TJ-2025-900001", channel_transaction_id="4200000001"))
    db.session.commit()
    bill = tmp_path / "bill.csv"
    bill.write_text(BILL, encoding="utf-8")
    browser_login(page, "tj_finance")
    page.goto("/reconciliation/")
    # The page also has the form that downloads a day's statements, with its own 对账日期.
    upload = page.locator("#statement-form")
    upload.get_by_label("对账日期").fill("2025-12-03")
    upload.get_by_label("账单文件").set_input_files(str(bill))
    with page.expect_navigation():
        page.get_by_role("button", name="上传并对账").click()
    assert "一致 1 笔，差异 2 笔" in page.locator(".flash").inner_text()
    assert page.locator("#reconciliation-items tbody tr").count() == 2
    first = page.locator("#reconciliation-items tbody tr").first
    first.get_by_placeholder("处理说明").fill("已补记收款")
    with page.expect_navigation():
        first.get_by_role("button", name="标记已处理").click()
    assert page.locator("#reconciliation-items tbody tr").count() == 1
    screenshot(page, "reconciliation")
    db.session.expire_all()
    assert db.session.scalar(sa.select(sa.func.count(ReconciliationItem.id)).filter_by(status="resolved")) == 1


def test_payment_page_shows_refund_red_invoice(page, browser_login, screenshot, make_account, einvoicing):
    # TJ 80.00 m² × 25.00 = 2000.00 plus the late fee as of 2026-01-03, 2000.00 × 0.002 × 3 =
    # 12.00, paid and e-invoiced. A 500.00 refund gives back 12.00 of late fee and 488.00 of heat.
    account = make_account("TJ", "80.00")
    post_late_fee(account, get_season(account.company_id, "2025-2026"), date(2026, 1, 3))
    db.session.commit()
    payment = collect_payment(account, "2012.00", "cash", user("tj_cashier"))
    browser_login(page, "tj_cashier")
    page.goto(f"/payments/{payment.id}")
    page.fill("#amount", "500.00")
    page.fill("#reason", "面积核减")
    with page.expect_navigation():
        page.get_by_role("button", name="申请退费").click()
    assert "红字发票待生成" in page.locator("#payment-refunds").inner_text()

    # The worker's task, run here under the eager testing Celery.
    assert reverse_refunds_task(older_than_seconds=0) == 1
    page.reload()
    red = db.session.scalar(sa.select(Invoice).filter_by(payment_id=payment.id, direction="red"))
    row = page.locator(f"#invoice-{red.id}").inner_text()
    assert "红字电子发票" in row
    assert red.invoice_number in row
    assert "-500.00" in row
    assert "已开票" in row
    assert "销售退回" in row
    refund_cell = page.locator("#payment-refunds tbody tr").first.inner_text()
    assert red.invoice_number in refund_cell
    assert "已开票" in refund_cell
    pdf_link = page.locator("#payment-refunds").get_by_role("link", name="PDF")
    response = page.request.get(pdf_link.get_attribute("href"))
    assert response.status == 200
    assert response.body().startswith(b"%PDF")
    assert page.locator(f"#invoice-{red.id}").get_by_role("link", name="服务商链接").get_attribute("href") == red.pdf_url
    screenshot(page, "payment-refund-red-invoice")

    with page.expect_navigation():
        page.locator("header").get_by_role("button", name="English").click()
    assert "Red invoice" in page.locator("#payment-refunds thead").inner_text()
    assert f"Reverses invoice {red.original.invoice_number}" in page.locator(f"#invoice-{red.id}").inner_text()
    screenshot(page, "payment-refund-red-invoice-en")


def _set_locale(username, locale):
    from app.org.models import User

    db.session.execute(sa.update(User).where(User.username == username).values(locale=locale))
    db.session.commit()


@pytest.mark.parametrize("locale", ["zh_CN", "en"])
def test_e_invoice_setup_notice(page, browser_login, screenshot, make_account, locale):
    # The demo configures no e-invoice vendor and no seller tax id for TJ.
    collect_payment(make_account("TJ", "87.35"), "2183.75", "cash", user("tj_cashier"))
    _set_locale("tj_cashier", locale)
    _set_locale("tj_admin", locale)

    browser_login(page, "tj_cashier")
    page.goto("/invoicing/failed")
    notice = page.locator("#e-invoice-setup")
    assert notice.locator("li").count() == 2
    assert "HEATFLOW_" not in notice.inner_text()
    screenshot(page, f"invoice-failed-cashier-{locale}")

    page.context.clear_cookies()
    browser_login(page, "tj_admin")
    page.goto("/invoicing/settings")
    notice = page.locator("#e-invoice-setup")
    assert notice.locator("li").count() == 2
    assert "HEATFLOW_EINVOICE_APP_KEY" in notice.inner_text()
    screenshot(page, f"invoice-settings-gaps-admin-{locale}")

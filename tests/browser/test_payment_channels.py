"""The online order page and the refund form driven through Chromium, with the WeChat Pay simulator."""

import time

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.billing.services import run_billing
from app.extensions import db
from app.network.models import Account
from app.org.models import User
from app.payments.models import OnlineOrder, WechatMerchant
from app.payments.refunds import request_refund
from app.payments.services import amount_owed, collect_payment
from tools.wechatpay_simulator import Simulator

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]
SP_MCHID = "1900000100"
SUB_MCHID = "1900000111"
PLATFORM_SERIAL = "PUB_KEY_ID_0119000001002024000000000000000001"


def _key_file(directory, name):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / f"{name}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    public = directory / f"{name}_public.pem"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, path, public


@pytest.fixture
def wechat_simulator(app, live_server, import_fixture, demo, tmp_path, monkeypatch):
    merchant, merchant_file, _ = _key_file(tmp_path, "merchant")
    platform, _, platform_public = _key_file(tmp_path, "platform")
    apiv3 = tmp_path / "apiv3.key"
    apiv3.write_text("0123456789abcdefghijklmnopqrstuv")
    simulator = Simulator({SP_MCHID: merchant.public_key()}, platform, PLATFORM_SERIAL, apiv3.read_bytes(), max_attempts=4)
    base_url = simulator.start(0)
    settings = {
        "WECHATPAY_API_BASE": base_url, "WECHATPAY_SP_MCHID": SP_MCHID, "WECHATPAY_SP_APPID": "wx0000000000000001",
        "WECHATPAY_MERCHANT_SERIAL": "3775B6A45ACD588826D15E583A95F5DD2C9F0001", "WECHATPAY_MERCHANT_KEY_FILE": str(merchant_file),
        "WECHATPAY_APIV3_KEY_FILE": str(apiv3), "WECHATPAY_PLATFORM_KEY_FILES": {PLATFORM_SERIAL: str(platform_public)},
        "WECHATPAY_NOTIFY_URL": f"{live_server}/payments/notify/wechat",
    }
    for name, value in settings.items():
        monkeypatch.setitem(app.config, name, value)
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    db.session.add(WechatMerchant(company_id=demo["TJ"].id, sub_mchid=SUB_MCHID))
    db.session.commit()
    yield simulator
    simulator.stop()


def test_online_order_then_refund(page, browser_login, screenshot, wechat_simulator):
    account = db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-0001031"))
    assert amount_owed(account).total > 0
    browser_login(page, "tj_cashier")
    page.goto(f"/payments/accounts/{account.id}")
    with page.expect_navigation():
        page.click("#online-order-link")
    page.select_option("#channel", "wechat")
    with page.expect_navigation():
        page.get_by_role("button", name="生成支付二维码").click()
    assert page.locator("#order-qr svg").count() == 1
    assert page.locator("#order-status").inner_text() == "待支付"
    screenshot(page, "online-order")

    order = db.session.scalar(sa.select(OnlineOrder).filter_by(account_id=account.id))
    wechat_simulator.pay(SUB_MCHID, order.out_trade_no)
    deadline = time.monotonic() + 15
    while not any(d["status"] == 204 for d in list(wechat_simulator.deliveries)) and time.monotonic() < deadline:
        time.sleep(0.05)
    with page.expect_navigation():
        page.get_by_role("link", name="向渠道查询状态").click()
    assert page.locator("#order-status").inner_text() == "已支付"
    with page.expect_navigation():
        page.get_by_role("link", name="查看收款与收据").click()

    page.fill("#amount", "100.00")
    page.fill("#reason", "面积核减")
    with page.expect_navigation():
        page.get_by_role("button", name="申请退费").click()
    assert "退款渠道" in page.content()
    deadline = time.monotonic() + 15
    while "已退款" not in page.content() and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    assert "已退款" in page.locator("#payment-refunds").inner_text()
    screenshot(page, "payment-refunds")


def test_refund_approval_list(page, browser_login, screenshot, import_fixture, demo):
    import_fixture("TJ", "TJ-shared.xlsx")
    run_billing("TJ", "2025-2026")
    demo["TJ"].refund_requires_approval = True
    db.session.commit()
    account = db.session.scalar(sa.select(Account).filter_by(legacy_no="TJ-0001031"))
    cashier = db.session.scalar(sa.select(User).filter_by(username="tj_cashier"))
    payment = collect_payment(account, "5368.43", "cash", cashier)
    request_refund(payment.id, "300.00", "面积核减", cashier)

    browser_login(page, "tj_finance")
    page.goto("/payments/refunds")
    assert "待审批" in page.locator("#refund-list").inner_text()
    screenshot(page, "refunds-pending")
    with page.expect_navigation():
        page.get_by_role("button", name="批准").click()
    assert "已退费 300.00 元" in page.content()
    assert "已退款" in page.locator("#refund-list").inner_text()
    screenshot(page, "refunds-approved")

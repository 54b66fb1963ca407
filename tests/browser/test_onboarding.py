"""Onboarding in the browser: a group administrator takes an acquired company to its first bills."""

from decimal import ROUND_HALF_UP, Decimal

import pytest

from tests.onboarding.legacy import LEGACY_STATUSES, LEGACY_USER_TYPES, generated_rows, ledger_bytes

pytestmark = pytest.mark.browser

ROWS = 300
PRICES = {"residential": Decimal("20.00"), "low_income": Decimal("20.00"), "non_residential": Decimal("30.00")}
SUSPENSION_RATIO = Decimal("0.30")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def expected_total(rows):
    """Season charges of `rows` by the tariff the test enters: area × price, 30 % while suspended, rounded per account."""
    total = Decimal("0.00")
    for _, user_type, status, area in rows:
        ratio = {"normal": Decimal(1), "suspended": SUSPENSION_RATIO, "not_connected": Decimal(0)}[LEGACY_STATUSES[status]]
        charge = Decimal(area) * PRICES[LEGACY_USER_TYPES[user_type]] * ratio
        total += charge.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return total


def test_onboarding_wizard_to_first_bills(page, browser_login, screenshot):
    rows = generated_rows(ROWS)
    browser_login(page, "hq_admin")
    page.get_by_role("link", name="新公司接入").click()
    page.locator("#start-onboarding").click()
    for label, value in [
        ("公司代码", "ZZ"), ("公司编号", "21"), ("公司名称", "中原热力有限公司"), ("城市", "郑州"),
        ("管理员登录名", "zz_admin"), ("管理员姓名", "中原管理员"), ("采暖季", "2025-2026"),
        ("开始日期", "2025-11-15"), ("结束日期", "2026-03-15"), ("居民单价（元/㎡）", "20.00"),
        ("非居民单价（元/㎡）", "30.00"), ("报停收费比例", "0.30"),
    ]:
        page.get_by_label(label, exact=True).fill(value)
    screenshot(page, "onboarding-new-company")
    page.get_by_role("button", name="建立公司").click()
    password = page.locator("#admin-password").inner_text()
    page.locator("#to-ledgers").click()

    page.set_input_files("#onboarding-upload input[type=file]", files=[{"name": "zz.xlsx", "mimeType": XLSX, "buffer": ledger_bytes(rows)}])
    page.get_by_role("button", name="上传").click()
    for text, code in LEGACY_STATUSES.items():
        page.get_by_label(f"供热状态 {text}").select_option(code)
    for text, code in LEGACY_USER_TYPES.items():
        page.get_by_label(f"用户类型 {text}").select_option(code)
    screenshot(page, "onboarding-value-mapping")
    page.get_by_role("button", name="保存对应并导入").click()
    page.get_by_role("button", name="生成应收").click()
    screenshot(page, "onboarding-billed")

    summary = page.locator("#onboarding-receivables").inner_text()
    assert f"{ROWS} 户" in summary
    assert f"应收合计 {expected_total(rows):.2f} 元" in summary
    assert page.locator("#onboarding-imports").get_by_text("已导入").count() == 1

    page.context.clear_cookies()
    browser_login(page, "zz_admin", password)
    page.get_by_role("link", name="用户档案").click()
    page.locator("input[name=q]").fill(rows[0][0])
    page.get_by_role("button", name="查询").click()
    assert page.get_by_text(rows[0][0]).count() >= 1

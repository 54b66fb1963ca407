"""Main screens driven through Chromium against the live server, with CSRF checks on.

Each test saves a screenshot of the screen it checks under docs/screenshots/.
"""

import io
from pathlib import Path

import openpyxl
import pytest
import sqlalchemy as sa

from app.extensions import db
from app.network.models import Account

# The xdist group keeps all browser tests on one worker, so that one Chromium serves them all.
pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

LEDGERS = Path(__file__).resolve().parents[1] / "fixtures" / "ledgers"

# (Excel row, header text) of every invalid cell in TJ-dirty-shared.xlsx.
DIRTY_LEDGER_ERRORS = [
    (4, "建筑面积"),
    (8, "建筑面积"),
    (12, "建筑面积"),
    (15, "供热状态"),
    (19, "用户类型"),
    (22, "原用户编号"),
    (26, "小区名称"),
    (29, "建筑面积"),
]
TJ_ACCOUNTS = 1743
TJ_RECEIVABLE_TOTAL = "13104294.50"
MARKED_FILL = "FFFFC7CE"


def _account_count(company):
    return db.session.scalar(sa.select(sa.func.count(Account.id)).where(Account.company_id == company.id))


def _upload(page, filename):
    page.goto("/ledger/")
    page.locator("#file").set_input_files(str(LEDGERS / filename))
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="上传并导入").click()
    status = navigation.value.status
    assert status == 200, f"upload of {filename} ended on HTTP {status}"


def _table_rows(page, selector):
    return [
        [cell.strip() for cell in row.locator("td, th").all_inner_texts()]
        for row in page.locator(f"{selector} tbody tr").all()
    ]


def test_login_rejects_wrong_password(page, browser_login, screenshot):
    browser_login(page, "tj_clerk", password="wrong-password")

    assert page.locator(".flash.error").inner_text() == "用户名或密码不正确。"
    assert page.url.endswith("/login")
    screenshot(page, "login")

    # An administrator lands on the start page; other roles land on their main page.
    browser_login(page, "tj_admin")

    assert page.locator("main h1").inner_text().startswith("欢迎，")
    assert "所属单位：津南热力有限公司" in page.locator("main").inner_text()
    screenshot(page, "home")


def test_dirty_ledger_lists_errors(page, browser_login, screenshot, demo, tmp_path):
    browser_login(page, "tj_clerk")
    _upload(page, "TJ-dirty-shared.xlsx")

    assert page.locator("#status-label").inner_text() == "已拒绝"
    assert "未保存任何数据" in page.locator("#summary").inner_text()
    rows = _table_rows(page, "#error-table")
    assert [(int(row[0]), row[1]) for row in rows] == DIRTY_LEDGER_ERRORS
    assert all(row[3] for row in rows), "every error row gives a reason"
    screenshot(page, "import-errors")

    with page.expect_download() as download_info:
        page.locator("#error-report").click()
    download = download_info.value
    assert download.suggested_filename.endswith(".xlsx")
    report_path = tmp_path / "report.xlsx"
    download.save_as(report_path)
    workbook = openpyxl.load_workbook(io.BytesIO(report_path.read_bytes()))
    assert workbook.sheetnames[0] == "错误报告"
    listed = list(workbook["错误报告"].iter_rows(min_row=2, values_only=True))
    assert len(listed) == 8
    assert [(row[0], row[1]) for row in listed] == DIRTY_LEDGER_ERRORS

    ledger_sheet = workbook.worksheets[1]
    header = {cell.value: cell.column for cell in ledger_sheet[1] if cell.value is not None}
    for excel_row, column in DIRTY_LEDGER_ERRORS:
        cell = ledger_sheet.cell(row=excel_row, column=header[column])
        assert cell.fill.fill_type == "solid", f"{column} in row {excel_row} is not filled"
        assert cell.fill.fgColor.rgb == MARKED_FILL, f"{column} in row {excel_row} has fill {cell.fill.fgColor.rgb}"

    assert _account_count(demo["TJ"]) == 0


def test_clean_ledger_then_billing(page, browser_login, screenshot, demo):
    browser_login(page, "tj_clerk")
    _upload(page, "TJ-shared.xlsx")

    assert page.locator("#status-label").inner_text() == "已导入"
    assert f"共 {TJ_ACCOUNTS} 户" in page.locator("#summary").inner_text()
    assert page.locator("#error-table").count() == 0
    screenshot(page, "import-succeeded")
    assert _account_count(demo["TJ"]) == TJ_ACCOUNTS

    page.goto("/billing/receivables")
    with page.expect_navigation():
        page.get_by_role("button", name="生成 2025-2026 应收").click()

    # The 81 accounts 未入网 get no charge, so the message counts fewer accounts than the table.
    assert f"合计 {TJ_RECEIVABLE_TOTAL} 元" in page.locator(".flash.success").inner_text()
    total_row = _table_rows(page, "#receivables")[-1]
    assert total_row == ["合计", str(TJ_ACCOUNTS), TJ_RECEIVABLE_TOTAL]
    screenshot(page, "receivables")


def test_hq_collection_by_role(page, browser_login, screenshot, import_fixture, demo):
    from app.billing.services import run_billing

    assert import_fixture("TJ", "TJ-shared.xlsx").ok
    run_billing("TJ", "2025-2026")

    browser_login(page, "hq_auditor")
    response = page.goto("/hq/collection")
    assert response.status == 200
    tj_row = page.locator('#collection tr[data-company="TJ"] td').all_inner_texts()
    assert tj_row[0] == demo["TJ"].name
    assert tj_row[1] == str(TJ_ACCOUNTS)
    assert tj_row[2] == TJ_RECEIVABLE_TOTAL
    screenshot(page, "hq-collection")

    page.context.clear_cookies()
    browser_login(page, "tj_clerk")
    response = page.goto("/hq/collection")
    assert response.status == 403
    assert page.locator("main h1").inner_text() == "403 无权访问"
    assert page.locator(".error-message").inner_text() == "集团汇总仅供集团总部查看。"
    screenshot(page, "hq-collection-forbidden")


# Main pages of a company clerk and of headquarters, by user.
MAIN_PAGES = {
    "tj_clerk": ["/login", "/", "/accounts/", "/ledger/", "/billing/receivables", "/processes/inbox"],
    "hq_auditor": ["/hq/collection", "/hq/dashboard", "/hq/audit"],
}


@pytest.mark.parametrize("username", sorted(MAIN_PAGES))
def test_main_pages_load_without_404(page, browser_login, demo, username):
    """No request of a main page, the icon included, ends in 404, and the console stays free of it."""
    not_found = []
    console_errors = []
    page.on("response", lambda response: not_found.append(response.url) if response.status == 404 else None)
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    browser_login(page, username)
    for path in MAIN_PAGES[username]:
        response = page.goto(path)
        assert response.status == 200, path
        page.wait_for_load_state("networkidle")

    assert not_found == []
    assert [text for text in console_errors if "404" in text] == []
    icon = page.request.get("/favicon.ico")
    assert icon.status == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
